//! What a run's protocol ([`slipway_proto::model::PROTOCOL`], carried in its input) changes in
//! the commands it sends.
//!
//! Why: every `patched` call records a marker and upserts `TemporalChangeVersion` in each new
//! run, and every search-attribute upsert is an event, even when nothing changed; on Temporal
//! Cloud each is a billed action. A provisioning cost 33 such events in three workflows, 8 of
//! them patch bookkeeping and 5 upserts of values already set. Runs started on protocol 1 take
//! the changes made before it as given and upsert only what changed; runs started earlier
//! replay exactly as recorded (their input has no protocol).

use temporalio_common::search_attributes::{SearchAttributeUpdate, SearchAttributes};
use temporalio_sdk::WorkflowContext;

/// Protocol 1: the changes guarded by patches until then, and upserts of changed values only.
pub(crate) const LEAN: u32 = 1;

/// Whether the change `patch` applies: given in a run of protocol `since` or later (no marker),
/// otherwise Temporal's `patched` (which records the marker in a new run and reads it back in
/// replay).
pub(crate) fn patched<W>(ctx: &WorkflowContext<W>, protocol: u32, since: u32, patch: &str) -> bool {
    protocol >= since || ctx.patched(patch)
}

/// Upserts `attrs`; in a lean run only those whose value differs from the run's current one
/// (the start's, or the last upsert's), and nothing at all when none does.
pub(crate) fn upsert<W>(ctx: &WorkflowContext<W>, protocol: u32, attrs: Vec<SearchAttributeUpdate>) {
    let attrs = if protocol >= LEAN { changed(&ctx.search_attributes(), attrs) } else { attrs };
    if !attrs.is_empty() {
        ctx.upsert_search_attributes(attrs);
    }
}

/// The updates of `attrs` that would change `current`. Pure: unit-tested below.
fn changed(current: &SearchAttributes, attrs: Vec<SearchAttributeUpdate>) -> Vec<SearchAttributeUpdate> {
    attrs
        .into_iter()
        .filter(|update| {
            let name = update.name().to_owned();
            let wanted = SearchAttributes::new([update.clone()]);
            wanted.raw_payload(&name).map(|p| &p.data) != current.raw_payload(&name).map(|p| &p.data)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search_attributes::{AGENT_ID, STATUS, USER_ID};

    fn names(updates: &[SearchAttributeUpdate]) -> Vec<&str> {
        updates.iter().map(|u| u.name()).collect()
    }

    #[test]
    fn only_changed_values_are_upserted() {
        let current = SearchAttributes::new([
            AGENT_ID.value_set("a1".to_owned()),
            STATUS.value_set("draft".to_owned()),
        ]);
        let same = vec![AGENT_ID.value_set("a1".to_owned()), STATUS.value_set("draft".to_owned())];
        assert!(changed(&current, same).is_empty());
        let moved = vec![
            AGENT_ID.value_set("a1".to_owned()),
            STATUS.value_set("provisioning".to_owned()),
            USER_ID.value_set("u1".to_owned()),
        ];
        assert_eq!(names(&changed(&current, moved)), [STATUS.name(), USER_ID.name()]);
        // Unsetting what is set is a change; unsetting what is not set is not.
        assert_eq!(names(&changed(&current, vec![STATUS.value_unset()])), [STATUS.name()]);
        assert!(changed(&current, vec![USER_ID.value_unset()]).is_empty());
    }
}
