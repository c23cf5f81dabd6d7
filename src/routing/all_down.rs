//! The all-down policies (`meridian.io/all-down`): what a name answers when none of its
//! eligible clusters is healthy and it has no wider name to fall back to.

use serde::Serialize;

use super::{Ctx, Decision, Reason, Selection};

/// What to answer when every cluster of a name is down or drained (`meridian.io/all-down`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AllDown {
    /// All targets, as Route 53 and gdnsd do: a wrong health check must not black-hole a service.
    #[default]
    All,
    /// The nearest target, as if every cluster were healthy.
    Nearest,
    /// NOERROR with no addresses.
    Empty,
    /// SERVFAIL, so resolvers try again later.
    Servfail,
}

impl AllDown {
    /// Every all-down policy, for per-policy metrics.
    pub const ALL: [AllDown; 4] = [
        AllDown::All,
        AllDown::Nearest,
        AllDown::Empty,
        AllDown::Servfail,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AllDown::All => "all",
            AllDown::Nearest => "nearest",
            AllDown::Empty => "empty",
            AllDown::Servfail => "servfail",
        }
    }

    /// Position in [`AllDown::ALL`], for metric arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for AllDown {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(AllDown::All),
            "nearest" => Ok(AllDown::Nearest),
            "empty" => Ok(AllDown::Empty),
            "servfail" => Ok(AllDown::Servfail),
            other => Err(format!(
                "unknown all-down policy {other:?} (expected all, nearest, empty or servfail)"
            )),
        }
    }
}

/// Nothing eligible is healthy: the name's all-down policy decides.
pub(super) fn select(cx: &Ctx<'_>) -> Decision {
    let policy = cx.d.all_down;
    // A drained cluster stays out even now: a drill must not be undone by an outage
    // elsewhere. Only when every cluster is drained do drains give way.
    let with_drained = super::only_drained_left(cx);
    let candidate = |t: &crate::snapshot::compile::CTarget| {
        cx.eligible(t) && (with_drained || !cx.health.target_drained(cx.d, t))
    };
    let reason = Reason::AllDown {
        policy,
        passed: None,
    };
    let selection = match policy {
        AllDown::All => Selection::AllTargets { with_drained },
        AllDown::Empty => Selection::Empty,
        AllDown::Servfail => Selection::Servfail,
        AllDown::Nearest => {
            // Nearest to the client for a policy that places clients, else the failover order.
            let located = match cx.position() {
                Some(p) if cx.d.policy.needs_location() => Some(p),
                _ => None,
            };
            let chosen = match &located {
                Some(p) => cx.nearest(p, candidate),
                None => cx.first_in_order(candidate),
            };
            match chosen {
                Some(target) => {
                    let nearest = located.and_then(|p| cx.nearest(&p, |t| cx.eligible(t)));
                    return Decision::new(
                        Selection::One {
                            target,
                            any_health: true,
                        },
                        Reason::AllDown {
                            policy,
                            passed: nearest.filter(|&n| n != target),
                        },
                    );
                }
                None => Selection::AllTargets { with_drained },
            }
        }
    };
    Decision::new(selection, reason)
}
