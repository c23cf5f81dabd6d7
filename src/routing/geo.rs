//! `geo`: the nearest healthy cluster to the client (or to the default cluster when the client
//! can't be placed); every healthy cluster when neither is known.

use super::{Ctx, Decision, PolicyDef, Reason, Selection};

pub const DEF: PolicyDef = PolicyDef {
    name: "geo",
    needs_location: true,
    select,
};

fn select(cx: &Ctx<'_>) -> Decision {
    let Some(p) = cx.position() else {
        return Decision::new(Selection::AllHealthy, Reason::Unplaced);
    };
    // Nearest eligible and nearest healthy in one pass; ties go to the earlier target.
    let mut nearest: Option<(u32, f64)> = None;
    let mut best: Option<(u32, f64)> = None;
    for (i, t) in cx.d.targets.iter().enumerate() {
        if !cx.eligible(t) {
            continue;
        }
        let s = super::score(t, cx.clusters, &p);
        if nearest.is_none_or(|(_, b)| s > b) {
            nearest = Some((i as u32, s));
        }
        if cx.ok(t) && best.is_none_or(|(_, b)| s > b) {
            best = Some((i as u32, s));
        }
    }
    match (best, nearest) {
        (Some((target, _)), Some((from, _))) if from != target => Decision::one(
            target,
            Reason::FailedOver {
                from,
                why: cx.why_unhealthy(from),
            },
        ),
        (Some((target, _)), _) => Decision::one(target, Reason::NearestHealthy),
        (None, _) => Decision::new(Selection::AllHealthy, Reason::NoPick),
    }
}
