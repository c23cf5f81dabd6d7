//! `all`: every healthy cluster.

use super::{Ctx, Decision, PolicyDef, Reason, Selection};

pub const DEF: PolicyDef = PolicyDef {
    name: "all",
    needs_location: false,
    select,
};

fn select(_: &Ctx<'_>) -> Decision {
    Decision::new(Selection::AllHealthy, Reason::EveryHealthy)
}
