//! `weighted`: one healthy cluster at random, in proportion to `meridian.io/weights`.

use super::{Ctx, Decision, PolicyDef, Reason};

pub const DEF: PolicyDef = PolicyDef {
    name: "weighted",
    needs_location: false,
    select,
};

fn select(cx: &Ctx<'_>) -> Decision {
    let total: u64 =
        cx.d.targets
            .iter()
            .filter(|t| cx.ok(t))
            .map(|t| u64::from(t.weight))
            .sum();
    if total == 0 {
        // Every healthy cluster has weight 0: fall back to the failover order.
        return super::failover::select(cx);
    }
    let mut pick = u64::from(cx.rand) % total;
    let mut chosen = 0;
    for (i, t) in cx.d.targets.iter().enumerate() {
        if !cx.ok(t) {
            continue;
        }
        let w = u64::from(t.weight);
        if pick < w {
            chosen = i as u32;
            break;
        }
        pick -= w;
    }
    Decision::one(chosen, Reason::RandomPick)
}
