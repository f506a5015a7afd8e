//! Setting status conditions as Kubernetes controllers do: a condition's
//! lastTransitionTime moves only when its status changes.

use platter_api::Condition;

/// Sets condition `type_` to `status` with `reason` and `message`; keeps the transition
/// time when the status stays the same.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &str,
) {
    let status = if status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(now.to_string());
            }
            c.status = status.to_string();
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.last_heartbeat_time = Some(now.to_string());
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            last_probe_time: None,
            last_heartbeat_time: Some(now.to_string()),
            last_transition_time: Some(now.to_string()),
            reason: reason.to_string(),
            message: message.to_string(),
        }),
    }
}

/// Whether condition `type_` is "True".
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}
