//! Which paths a coding job may touch.
//!
//! The issue text that drives a job is written by anyone who can open an issue, and the model
//! does what text asks. So the paths it may change are decided here, not by the model: nothing
//! outside the repository, nothing that runs in CI or with the repository's secrets
//! (`.github/`, other CI configurations), no lockfiles (a dependency swap hidden in a lockfile
//! is the classic supply-chain attack) and nothing that looks like a secret. An operator can
//! allow a protected path explicitly (`SLIPWAY_JOB_ALLOWED_PATHS`); nothing else can.

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}` is {reason}")]
pub struct Refusal {
    /// The path as given.
    pub path: String,
    /// The rule it breaks, readable in an issue comment.
    pub reason: &'static str,
}

/// CI configurations outside `.github/`.
const CI_FILES: &[&str] = &[
    ".gitlab-ci.yml",
    ".travis.yml",
    "Jenkinsfile",
    "azure-pipelines.yml",
    "bitbucket-pipelines.yml",
    ".drone.yml",
    "appveyor.yml",
    ".cirrus.yml",
];
const CI_DIRS: &[&str] = &[".github/", ".circleci/", ".buildkite/", ".gitlab/", ".woodpecker/"];
const LOCKFILES: &[&str] = &[
    "Cargo.lock",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "bun.lockb",
    "bun.lock",
    "poetry.lock",
    "Pipfile.lock",
    "uv.lock",
    "Gemfile.lock",
    "go.sum",
    "composer.lock",
    "mix.lock",
    "flake.lock",
    "Podfile.lock",
    "packages.lock.json",
];
const SECRET_NAMES: &[&str] = &[".npmrc", ".pypirc", ".netrc", ".pgpass", ".htpasswd", ".git-credentials"];
const SECRET_SUFFIXES: &[&str] =
    &[".pem", ".key", ".p12", ".pfx", ".jks", ".keystore", ".tfvars", ".tfstate"];

/// The path policy of coding jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathPolicy {
    /// Patterns an operator allowed despite the rules (`*` matches any run of characters,
    /// `/` included). Paths outside the repository are never allowed.
    pub allowed: Vec<String>,
}

impl PathPolicy {
    /// A policy allowing `allowed` (comma-separated patterns, as `SLIPWAY_JOB_ALLOWED_PATHS`).
    pub fn from_list(allowed: &str) -> Self {
        Self {
            allowed: allowed.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect(),
        }
    }

    /// `Ok` if a job may create, edit or delete `path`.
    pub fn check(&self, path: &str) -> Result<(), Refusal> {
        let refuse = |reason| Err(Refusal { path: path.to_owned(), reason });
        if let Some(reason) = unsafe_spelling(path) {
            return refuse(reason);
        }
        if path.is_empty()
            || path.starts_with('/')
            || path.split('/').any(|s| s.is_empty() || s == "." || s == "..")
        {
            return refuse("not a relative path inside the repository");
        }
        if path.split('/').any(|s| s == ".git") {
            return refuse("inside the repository's .git directory");
        }
        if self.allowed.iter().any(|p| wildcard(p, path)) {
            return Ok(());
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        let lower = name.to_ascii_lowercase();
        if CI_DIRS.iter().any(|d| path.starts_with(d)) || CI_FILES.contains(&name) {
            return refuse("CI configuration (it runs with the repository's secrets)");
        }
        if LOCKFILES.contains(&name) {
            return refuse("a lockfile (dependency changes are reviewed by people)");
        }
        if lower.starts_with(".env")
            || SECRET_NAMES.contains(&lower.as_str())
            || SECRET_SUFFIXES.iter().any(|s| lower.ends_with(s))
            || lower.starts_with("id_rsa")
            || lower.starts_with("id_ed25519")
            || lower.starts_with("id_ecdsa")
            || lower.contains("secret")
            || lower.contains("credential")
        {
            return refuse("a file that looks like it holds secrets");
        }
        Ok(())
    }

    /// Every refusal among `paths`.
    pub fn refusals<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Vec<Refusal> {
        paths.into_iter().filter_map(|p| self.check(p).err()).collect()
    }
}

/// Characters that look like `.` or `/` (or a run of dots) without being them: a path written
/// with them reads as an escape to a person, and some tool on the way may fold them into one.
const LOOKALIKES: &[char] = &[
    '\u{2024}', // ONE DOT LEADER
    '\u{2025}', // TWO DOT LEADER
    '\u{2026}', // HORIZONTAL ELLIPSIS
    '\u{FE52}', // SMALL FULL STOP
    '\u{FF0E}', // FULLWIDTH FULL STOP
    '\u{3002}', // IDEOGRAPHIC FULL STOP
    '\u{FF61}', // HALFWIDTH IDEOGRAPHIC FULL STOP
    '\u{2215}', // DIVISION SLASH
    '\u{2044}', // FRACTION SLASH
    '\u{FF0F}', // FULLWIDTH SOLIDUS
    '\u{29F8}', // BIG SOLIDUS
    '\u{2571}', // BOX DRAWINGS LIGHT DIAGONAL
    '\u{1735}', // PHILIPPINE SINGLE PUNCTUATION
    '\u{FE68}', // SMALL REVERSE SOLIDUS
    '\u{FF3C}', // FULLWIDTH REVERSE SOLIDUS
    '\u{29F5}', // REVERSE SOLIDUS OPERATOR
    '\u{29F9}', // BIG REVERSE SOLIDUS
];

/// Why `path` is spelled in a way that could mean another path once it is decoded, normalised
/// or put in a URL, or `None`. A planned path becomes a segment of a REST URL
/// (`/repos/{owner}/{repo}/contents/{path}`): `%2e%2e` is `..` to a URL parser, `?` and `#` end
/// the path, a backslash is a separator to some. None of these occurs in an ordinary source
/// path, so they are refused outright rather than interpreted.
fn unsafe_spelling(path: &str) -> Option<&'static str> {
    if path.contains('%') {
        return Some("percent-encoded (`%` can spell `..` or `/` once decoded)");
    }
    if path.contains('?') || path.contains('#') {
        return Some("not a plain path (`?` or `#` would end it in a URL)");
    }
    if path.contains('\\') {
        return Some("not a relative path inside the repository (a backslash is a separator to some tools)");
    }
    if path.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Some("not a plain path (it holds control or invisible characters)");
    }
    if path.chars().any(|c| LOOKALIKES.contains(&c)) {
        return Some("not a plain path (it holds a look-alike of `.`, `/` or `\\`)");
    }
    None
}

/// Characters that print as nothing (or as a space) and are not a plain ASCII space: format
/// characters, zero-width and bidirectional controls, other spaces and separators.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00A0}' | '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{1680}'
        | '\u{17B4}' | '\u{17B5}' | '\u{180E}' | '\u{2000}'..='\u{200F}' | '\u{2028}'..='\u{202F}'
        | '\u{205F}'..='\u{206F}' | '\u{3000}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}' | '\u{E0100}'..='\u{E01EF}')
}

/// `*` matches any run of characters (including `/`); everything else matches itself.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_source_files_are_allowed() {
        let p = PathPolicy::default();
        for path in ["README.md", "src/lib.rs", "docs/guide/intro.md", "web/app/page.tsx", "Cargo.toml"] {
            assert_eq!(p.check(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn ci_lockfiles_secrets_and_escapes_are_refused() {
        let p = PathPolicy::default();
        for (path, why) in [
            (".github/workflows/deploy.yml", "CI"),
            (".github/CODEOWNERS", "CI"),
            (".gitlab-ci.yml", "CI"),
            ("ci/Jenkinsfile", "CI"),
            ("Cargo.lock", "lockfile"),
            ("web/package-lock.json", "lockfile"),
            (".env", "secrets"),
            (".env.production", "secrets"),
            ("deploy/server.pem", "secrets"),
            ("config/secrets.yml", "secrets"),
            ("aws_credentials", "secrets"),
            ("../outside.txt", "inside the repository"),
            ("/etc/passwd", "inside the repository"),
            ("src/../../x", "inside the repository"),
            ("a//b", "inside the repository"),
            (".git/config", ".git"),
            ("sub/.git/hooks/pre-commit", ".git"),
            ("", "inside the repository"),
        ] {
            let refusal = p.check(path).expect_err(path);
            assert!(refusal.to_string().contains(why), "{path}: {refusal}");
        }
    }

    #[test]
    fn spellings_that_could_mean_another_path_are_refused_with_their_reason() {
        let p = PathPolicy::from_list("*");
        for (path, why) in [
            ("x/%2e%2e/%2e%2e/other-repo/contents/secret.yml", "percent-encoded"),
            ("%2e%2e/x", "percent-encoded"),
            ("src%2flib.rs", "percent-encoded"),
            ("src/lib.rs%00", "percent-encoded"),
            ("src/lib.rs?ref=other", "`?` or `#`"),
            ("README.md#x", "`?` or `#`"),
            ("src\\..\\..\\x", "backslash"),
            ("src\\lib.rs", "backslash"),
            ("src/lib\0.rs", "control"),
            ("src/\nlib.rs", "control"),
            ("src/lib.rs\r", "control"),
            ("src/\u{7f}lib.rs", "control"),
            ("src/\u{85}lib.rs", "control"),
            ("src/\u{200b}lib.rs", "invisible"),
            ("src/\u{202e}sr.bil", "invisible"),
            ("src/\u{feff}lib.rs", "invisible"),
            ("src/lib\u{a0}.rs", "invisible"),
            ("x/\u{2024}\u{2024}/y", "look-alike"),
            ("x/\u{2025}/y", "look-alike"),
            ("x/\u{ff0e}\u{ff0e}/y", "look-alike"),
            ("x/\u{fe52}\u{fe52}/y", "look-alike"),
            ("x\u{2215}..\u{2215}y", "look-alike"),
            ("x\u{2044}y", "look-alike"),
            ("x\u{ff0f}y", "look-alike"),
            ("x\u{ff3c}y", "look-alike"),
            ("/etc/passwd", "inside the repository"),
            ("a//b", "inside the repository"),
            ("a/", "inside the repository"),
            ("./a", "inside the repository"),
            ("a/./b", "inside the repository"),
            ("a/..", "inside the repository"),
            ("..", "inside the repository"),
        ] {
            let refusal = p.check(path).expect_err(path);
            assert!(refusal.to_string().contains(why), "{path:?}: {refusal}");
        }
        // Ordinary names with dots, dashes and non-ASCII letters stay allowed.
        for path in ["docs/v1.2/notes.md", "a/.hidden/b.txt", "i18n/café.md", "src/...rs", "x/..y/z"] {
            assert_eq!(PathPolicy::default().check(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn an_operator_can_allow_a_protected_path_but_never_an_escape() {
        let p = PathPolicy::from_list(" .github/workflows/*.yml , Cargo.lock,");
        assert_eq!(p.allowed, [".github/workflows/*.yml", "Cargo.lock"]);
        assert_eq!(p.check(".github/workflows/ci.yml"), Ok(()));
        assert_eq!(p.check("Cargo.lock"), Ok(()));
        assert!(p.check(".github/dependabot.yml").is_err());
        assert!(PathPolicy::from_list("*").check("../x").is_err());
        assert!(PathPolicy::from_list("*").check(".git/config").is_err());
    }

    #[test]
    fn wildcards_match_runs_of_characters() {
        assert!(wildcard("a*c", "abbbc") && wildcard("*", "x/y") && wildcard("a*b*c", "a-b-c"));
        assert!(!wildcard("a*c", "ab") && !wildcard("abc", "abcd") && !wildcard("a*b*c", "acb"));
    }
}
