//! Settings every command reads: the process environment first, then the local stack's
//! defaults. Those defaults *are* `scripts/dev.env` (compiled in and read the way the shell
//! reads it), so `slipway` and the scripts cannot drift apart.

use std::collections::BTreeMap;

/// `scripts/dev.env`: lines of the form `: "${NAME:=default}"`, defaults may use `$OTHER`.
const DEV_ENV: &str = include_str!("../../scripts/dev.env");

/// The `(name, default)` pairs of `scripts/dev.env`, in file order, defaults unexpanded.
fn defaults() -> impl Iterator<Item = (&'static str, &'static str)> {
    DEV_ENV.lines().filter_map(|line| {
        let rest = line.trim().strip_prefix(": \"${")?;
        let (name, value) = rest.split_once(":=")?;
        Some((name, value.strip_suffix("}\"")?))
    })
}

/// Replace `$NAME` / `${NAME}` in `value` with `lookup(NAME)` (empty when unknown), as the
/// shell does.
fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            braced.split_once('}').unwrap_or((braced, ""))
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&lookup(name).unwrap_or_default());
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Every variable of `scripts/dev.env` with its value here: the environment's when set and not
/// empty (as `:=` does), else the expanded default.
pub(crate) fn resolve_with(env: impl Fn(&str) -> Option<String>) -> BTreeMap<String, String> {
    let mut resolved: BTreeMap<String, String> = BTreeMap::new();
    for (name, default) in defaults() {
        let value = env(name).filter(|v| !v.is_empty()).unwrap_or_else(|| {
            expand(default, |n| resolved.get(n).cloned().or_else(|| env(n).filter(|v| !v.is_empty())))
        });
        resolved.insert(name.to_owned(), value);
    }
    resolved
}

/// [`resolve_with`] over the process environment.
pub(crate) fn resolved() -> BTreeMap<String, String> {
    resolve_with(|k| std::env::var(k).ok())
}

/// One setting: the environment's value, else the local stack's default, else `""`.
pub(crate) fn get(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => resolved().remove(name).unwrap_or_default(),
    }
}

/// The starter's base URL (`http://$SLIPWAY_HTTP_ADDR`).
pub(crate) fn starter_url() -> String {
    format!("http://{}", get("SLIPWAY_HTTP_ADDR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exported_variable_has_a_default() {
        let names: Vec<&str> = defaults().map(|(n, _)| n).collect();
        assert!(names.len() > 30, "{names:?}");
        let export = DEV_ENV.split("export").nth(1).expect("an export line");
        for var in export.split_whitespace().filter(|w| *w != "\\") {
            assert!(names.contains(&var), "{var} is exported but has no default");
        }
    }

    #[test]
    fn defaults_expand_like_the_shell() {
        let none = resolve_with(|_| None);
        assert_eq!(none["SLIPWAY_HTTP_ADDR"], "127.0.0.1:8080");
        assert_eq!(none["SLIPWAY_CALLBACK_URL"], "http://127.0.0.1:8080/callbacks/github-actions");
        assert_eq!(none["HETZNER_API_URL"], "http://127.0.0.1:8099/hetzner/v1");
        assert_eq!(none["STRIPE_WEBHOOK_SECRET"], "whsec_dev_slipway");
        // A value from the environment wins and feeds the defaults that use it; empty counts as unset.
        let moved = resolve_with(|k| match k {
            "SLIPWAY_SANDBOX_ADDR" => Some("127.0.0.1:9999".to_owned()),
            "STRIPE_WEBHOOK_SECRET" => Some(String::new()),
            _ => None,
        });
        assert_eq!(moved["TAILSCALE_API_URL"], "http://127.0.0.1:9999/tailscale");
        assert_eq!(moved["STRIPE_WEBHOOK_SECRET"], "whsec_dev_slipway");
        assert_eq!(expand("a-${X}-$Y/z-$", |n| Some(n.to_lowercase())), "a-x-y/z-$");
    }
}
