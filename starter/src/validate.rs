//! Validation of identifiers that end up in resource names, labels and workflow ids.

/// Hetzner locations an agent can live in.
pub const REGIONS: [&str; 6] = ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"];

/// Agent ids become the server name `slipway-<id>` (an RFC 1123 hostname, at most 63 chars):
/// 1–40 chars of `[a-z0-9-]`, starting and ending with a letter or digit.
pub fn agent_id(id: &str) -> Result<(), String> {
    let ok = (1..=40).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    ok.then_some(()).ok_or_else(|| format!("agentId {id:?} must be 1-40 characters of a-z, 0-9 and '-'"))
}

/// User ids (JWT `sub`, Stripe `userId`) become part of a workflow id: 1–64 printable ASCII
/// characters without spaces or `/`.
pub fn user_id(id: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    ok.then_some(()).ok_or_else(|| format!("userId {id:?} must be 1-64 printable characters without '/'"))
}

/// One of [`REGIONS`].
pub fn region(r: &str) -> Result<(), String> {
    REGIONS
        .contains(&r)
        .then_some(())
        .ok_or_else(|| format!("region {r:?} must be one of {}", REGIONS.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids() {
        assert!(agent_id("a1").is_ok());
        assert!(agent_id("my-agent-7").is_ok());
        for bad in ["", "-a", "a-", "A1", "a_b", "a.b", &"x".repeat(41)] {
            assert!(agent_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_ids() {
        assert!(user_id("user_123").is_ok());
        assert!(user_id("auth0|abc").is_ok());
        for bad in ["", "a b", "a/b", &"x".repeat(65)] {
            assert!(user_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn regions() {
        assert!(region("fsn1").is_ok());
        assert!(region("mars1").is_err());
    }
}
