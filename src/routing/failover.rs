//! `failover`: the first healthy cluster in `meridian.io/failover-order` (then the rest, in
//! the record's order).

use super::{Ctx, Decision, PolicyDef, Reason, Selection};

pub const DEF: PolicyDef = PolicyDef {
    name: "failover",
    needs_location: false,
    select,
};

pub(super) fn select(cx: &Ctx<'_>) -> Decision {
    match cx.first_in_order(|t| cx.ok(t)) {
        Some(target) => Decision::one(target, Reason::FirstInOrder),
        None => Decision::new(Selection::AllHealthy, Reason::NoPick),
    }
}
