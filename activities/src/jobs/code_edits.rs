//! Applying a model's edits to the files a coding job read.
//!
//! The model never returns whole files to replace what is there: it answers with search/replace
//! edits against the content it was shown (and the whole content only of files it creates).
//! Each edit is applied here and checked, so an edit that does not fit the file fails the job
//! visibly instead of silently rewriting it: the file is in the plan, the excerpt to replace
//! occurs exactly once, a created file did not exist, a deleted one did, and every file touched
//! ends up different from what it was.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use slipway_proto::jobs::FileChange;

/// One edit as the model answers it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Edit {
    /// Path relative to the repository root.
    pub path: String,
    /// An exact, unique excerpt of the current content; empty to create the file.
    pub search: String,
    /// What the excerpt becomes (the whole content of a created file).
    pub replace: String,
}

/// The model's answer to the coding step.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EditAnswer {
    /// Edits, applied in order.
    pub edits: Vec<Edit>,
    /// Paths to delete.
    #[serde(default)]
    pub delete: Vec<String>,
}

/// Why edits could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The answer touches a path the plan did not name.
    #[error("the edit of `{0}` is outside the plan")]
    OutsidePlan(String),
    /// The excerpt to replace is not in the file.
    #[error("the excerpt to replace in `{0}` is not in the file")]
    NotFound(String),
    /// The excerpt occurs several times, so where to apply it is ambiguous.
    #[error("the excerpt to replace in `{path}` occurs {count} times")]
    Ambiguous {
        /// The file.
        path: String,
        /// How often the excerpt occurs.
        count: usize,
    },
    /// An edit of a file that does not exist (only creating it is possible).
    #[error("`{0}` does not exist: an edit of it must create it (empty search)")]
    Missing(String),
    /// A create of a file that already exists (it would be replaced, not edited).
    #[error("`{0}` already exists: it must be edited, not created")]
    Exists(String),
    /// A touched file ends up as it was.
    #[error("the edits leave `{0}` unchanged")]
    Unchanged(String),
    /// Nothing to do.
    #[error("the answer changes nothing")]
    Empty,
}

/// Applies `answer` to `originals` (the current content of the files the plan edits; paths the
/// plan creates are absent) and returns the files to commit (content `None` deletes).
pub fn apply(
    originals: &BTreeMap<String, String>,
    plan: &[String],
    answer: &EditAnswer,
) -> Result<Vec<FileChange>, EditError> {
    let in_plan = |p: &str| plan.iter().any(|f| f == p);
    let mut current: BTreeMap<String, String> = BTreeMap::new();
    for edit in &answer.edits {
        if !in_plan(&edit.path) {
            return Err(EditError::OutsidePlan(edit.path.clone()));
        }
        let existing = current.get(&edit.path).or_else(|| originals.get(&edit.path)).cloned();
        let next = match (existing, edit.search.is_empty()) {
            (None, true) => edit.replace.clone(),
            (None, false) => return Err(EditError::Missing(edit.path.clone())),
            (Some(_), true) => return Err(EditError::Exists(edit.path.clone())),
            (Some(text), false) => match text.matches(edit.search.as_str()).count() {
                1 => text.replacen(edit.search.as_str(), &edit.replace, 1),
                0 => return Err(EditError::NotFound(edit.path.clone())),
                count => return Err(EditError::Ambiguous { path: edit.path.clone(), count }),
            },
        };
        current.insert(edit.path.clone(), next);
    }
    let mut out = Vec::new();
    for (path, content) in current {
        if originals.get(&path) == Some(&content) {
            return Err(EditError::Unchanged(path));
        }
        out.push(FileChange { path, content: Some(content) });
    }
    let deleted: BTreeSet<&String> = answer.delete.iter().collect();
    for path in deleted {
        if !in_plan(path) {
            return Err(EditError::OutsidePlan(path.clone()));
        }
        if !originals.contains_key(path) {
            return Err(EditError::Missing(path.clone()));
        }
        out.retain(|f| &f.path != path);
        out.push(FileChange { path: path.clone(), content: None });
    }
    if out.is_empty() {
        return Err(EditError::Empty);
    }
    Ok(out)
}

/// A unified diff of `changes` against `originals`, for the review step and people.
pub fn unified_diff(originals: &BTreeMap<String, String>, changes: &[FileChange]) -> String {
    let mut out = String::new();
    for change in changes {
        let old = originals.get(&change.path).map_or("", String::as_str);
        let new = change.content.as_deref().unwrap_or("");
        let (from, to) = (
            if originals.contains_key(&change.path) {
                format!("a/{}", change.path)
            } else {
                "/dev/null".into()
            },
            if change.content.is_some() { format!("b/{}", change.path) } else { "/dev/null".into() },
        );
        let diff = similar::TextDiff::from_lines(old, new);
        out.push_str(&diff.unified_diff().context_radius(3).header(&from, &to).to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn originals() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("README.md".to_owned(), "# shop\n\nSells things.\nShips worldwide.\n".to_owned()),
            ("src/lib.rs".to_owned(), "pub fn a() {}\npub fn b() {}\n".to_owned()),
        ])
    }

    fn edit(path: &str, search: &str, replace: &str) -> Edit {
        Edit { path: path.into(), search: search.into(), replace: replace.into() }
    }

    fn plan() -> Vec<String> {
        vec!["README.md".into(), "src/lib.rs".into(), "src/new.rs".into()]
    }

    #[test]
    fn an_edit_changes_only_its_excerpt_and_the_other_lines_survive() {
        let answer = EditAnswer {
            edits: vec![
                edit("README.md", "Sells things.\n", "Sells things, now with a buy button.\n"),
                edit("src/new.rs", "", "pub fn new() {}\n"),
                edit("src/new.rs", "pub fn new() {}\n", "pub fn new() -> u8 { 1 }\n"),
            ],
            delete: vec![],
        };
        let files = apply(&originals(), &plan(), &answer).unwrap();
        assert_eq!(
            files,
            vec![
                FileChange {
                    path: "README.md".into(),
                    content: Some(
                        "# shop\n\nSells things, now with a buy button.\nShips worldwide.\n".into()
                    )
                },
                FileChange { path: "src/new.rs".into(), content: Some("pub fn new() -> u8 { 1 }\n".into()) },
            ]
        );
        let diff = unified_diff(&originals(), &files);
        assert!(diff.contains("--- a/README.md\n+++ b/README.md\n"), "{diff}");
        assert!(
            diff.contains("-Sells things.\n+Sells things, now with a buy button.\n Ships worldwide.\n"),
            "{diff}"
        );
        assert!(diff.contains("--- /dev/null\n+++ b/src/new.rs\n"), "{diff}");
    }

    #[test]
    fn edits_that_do_not_fit_fail_instead_of_rewriting() {
        let o = originals();
        let run = |edits: Vec<Edit>, delete: Vec<&str>| {
            apply(&o, &plan(), &EditAnswer { edits, delete: delete.into_iter().map(str::to_owned).collect() })
                .unwrap_err()
        };
        assert_eq!(run(vec![edit("other.rs", "", "x")], vec![]), EditError::OutsidePlan("other.rs".into()));
        assert_eq!(
            run(vec![edit("README.md", "nope", "x")], vec![]),
            EditError::NotFound("README.md".into())
        );
        assert_eq!(
            run(vec![edit("src/lib.rs", "pub fn", "fn")], vec![]),
            EditError::Ambiguous { path: "src/lib.rs".into(), count: 2 }
        );
        assert_eq!(
            run(vec![edit("README.md", "", "# all new\n")], vec![]),
            EditError::Exists("README.md".into())
        );
        assert_eq!(run(vec![edit("src/new.rs", "x", "y")], vec![]), EditError::Missing("src/new.rs".into()));
        assert_eq!(
            run(vec![edit("README.md", "Sells", "Sells")], vec![]),
            EditError::Unchanged("README.md".into())
        );
        assert_eq!(run(vec![], vec!["src/new.rs"]), EditError::Missing("src/new.rs".into()));
        assert_eq!(run(vec![], vec!["Cargo.toml"]), EditError::OutsidePlan("Cargo.toml".into()));
        assert_eq!(run(vec![], vec![]), EditError::Empty);
    }

    #[test]
    fn a_delete_is_a_change_without_content() {
        let answer = EditAnswer { edits: vec![], delete: vec!["src/lib.rs".into()] };
        let files = apply(&originals(), &plan(), &answer).unwrap();
        assert_eq!(files, vec![FileChange { path: "src/lib.rs".into(), content: None }]);
        assert!(unified_diff(&originals(), &files).contains("+++ /dev/null"));
    }
}
