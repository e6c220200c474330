//! Stripe's request bodies: `application/x-www-form-urlencoded` with bracket nesting.
//!
//! `metadata[userId]=u1&line_items[0][price]=p&expand[]=x` becomes
//! `{"metadata":{"userId":"u1"},"line_items":[{"price":"p"}],"expand":["x"]}`. Keys are
//! percent-decoded before the brackets are read (clients such as `serde_qs` encode them as
//! `%5B`/`%5D`). Leaves stay strings, as Stripe receives them; handlers convert. An object
//! whose keys are all array indices becomes an array ordered by index.

use serde_json::{Map, Value};

/// Parses a form body into nested JSON (an object; empty body → `{}`).
pub(crate) fn parse(body: &[u8]) -> Value {
    let mut root = Map::new();
    for (key, value) in url::form_urlencoded::parse(body) {
        let path = split_key(&key);
        insert(&mut root, &path, Value::String(value.into_owned()));
    }
    arrays(Value::Object(root))
}

/// `a[b][0][]` → `["a", "b", "0", ""]`; a key with unbalanced brackets is taken whole.
fn split_key(key: &str) -> Vec<String> {
    let Some(open) = key.find('[') else {
        return vec![key.to_owned()];
    };
    let mut parts = vec![key[..open].to_owned()];
    let mut rest = &key[open..];
    while !rest.is_empty() {
        let Some(inner) = rest.strip_prefix('[') else {
            return vec![key.to_owned()];
        };
        let Some(close) = inner.find(']') else {
            return vec![key.to_owned()];
        };
        parts.push(inner[..close].to_owned());
        rest = &inner[close + 1..];
    }
    if parts[0].is_empty() { vec![key.to_owned()] } else { parts }
}

fn insert(map: &mut Map<String, Value>, path: &[String], value: Value) {
    let (first, rest) = path.split_first().expect("split_key never returns an empty path");
    // `[]` appends: the next free index among the keys already there.
    let key = if first.is_empty() { map.len().to_string() } else { first.clone() };
    if rest.is_empty() {
        map.insert(key, value);
        return;
    }
    let child = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    if let Value::Object(child) = child {
        insert(child, rest, value);
    }
}

/// Turns objects keyed only by indices (`{"0":..,"1":..}`) into arrays, recursively.
fn arrays(value: Value) -> Value {
    let Value::Object(map) = value else {
        return value;
    };
    let all_indices = !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok());
    if all_indices {
        let mut items: Vec<(usize, Value)> =
            map.into_iter().map(|(k, v)| (k.parse().unwrap_or(usize::MAX), arrays(v))).collect();
        items.sort_by_key(|(i, _)| *i);
        Value::Array(items.into_iter().map(|(_, v)| v).collect())
    } else {
        Value::Object(map.into_iter().map(|(k, v)| (k, arrays(v))).collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::parse;

    #[test]
    fn nests_brackets_and_builds_arrays() {
        let body = "mode=subscription&line_items[0][price]=price_x&line_items%5B0%5D%5Bquantity%5D=1\
            &line_items[1][price]=price_y&metadata[userId]=u1&metadata[note]=a+b%26c\
            &subscription_data[metadata][agentId]=a1&expand[]=x&expand[]=y&payload[value]=25";
        assert_eq!(
            parse(body.as_bytes()),
            json!({
                "mode": "subscription",
                "line_items": [{"price": "price_x", "quantity": "1"}, {"price": "price_y"}],
                "metadata": {"userId": "u1", "note": "a b&c"},
                "subscription_data": {"metadata": {"agentId": "a1"}},
                "expand": ["x", "y"],
                "payload": {"value": "25"},
            })
        );
    }

    #[test]
    fn odd_input_stays_usable() {
        assert_eq!(parse(b""), json!({}));
        assert_eq!(parse(b"metadata="), json!({"metadata": ""}));
        assert_eq!(parse(b"a[b=1&[c]=2"), json!({"a[b": "1", "[c]": "2"}));
        assert_eq!(parse(b"items[10]=b&items[2]=a"), json!({"items": ["a", "b"]}));
        assert_eq!(parse(b"a=1&a[b]=2"), json!({"a": {"b": "2"}}));
    }
}
