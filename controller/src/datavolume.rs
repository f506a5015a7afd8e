//! DataVolume: Pending → ImportScheduled → ImportInProgress → Succeeded (or Failed when
//! fatal), with CDI's progress strings, conditions (Bound, Ready, Running) and
//! restartCount; clones, blanks and uploads take their own scheduled phases.

use platter_api::datavolume::{DataVolumePhase as Phase, DataVolumeStatus};
use platter_api::DataVolume;

use crate::conditions::set;
use crate::{rfc3339, Event, Now};

/// What the executor saw of a DataVolume's world.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The DataVolume's own volume, once it exists (imports create it only when they
    /// complete and verify).
    pub volume: Option<Volume>,
    /// An import (or blank create, or clone) under way: bytes done and total if known.
    pub running: Option<(u64, Option<u64>)>,
    /// Failed attempts so far, and the last one.
    pub failures: u32,
    pub last_failure: Option<Failure>,
    /// For a pvc or snapshot source (or a DataSource's): the source's size when it
    /// exists.
    pub clone_source: Option<u64>,
    /// For a sourceRef: the DataSource exists.
    pub data_source: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Volume {
    pub size: u64,
    /// Created for an upload that has not completed.
    pub awaiting_upload: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// Retrying cannot help (a checksum mismatch, a corrupt or unsupported image).
    pub fatal: bool,
    pub at: Now,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Import the spec's http or registry source into the volume (a retry starts over or
    /// resumes, as the importer can).
    Import {
        size: Option<u64>,
    },
    CreateBlank {
        size: u64,
    },
    /// O(1) clone of the source volume (pvc) or snapshot, grown to `size` if larger.
    Clone {
        size: Option<u64>,
    },
    /// Create the volume empty and let `platter upload` fill it.
    PrepareUpload {
        size: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: DataVolumeStatus,
    pub actions: Vec<Action>,
    pub events: Vec<Event>,
    /// Look again after this many seconds even if nothing changes (retry backoff).
    pub requeue_after: Option<u64>,
}

/// Seconds to wait before retry `n` (1-based): 10 s doubling, at most 5 minutes.
pub fn backoff(n: u32) -> u64 {
    10u64
        .saturating_mul(1 << n.saturating_sub(1).min(5))
        .min(300)
}

/// CDI's progress text: "45.00%" while running, "100.0%" when done, "N/A" unknown.
pub fn progress(done: u64, total: Option<u64>) -> String {
    match total {
        Some(t) if t > 0 => format!("{:.2}%", (done.min(t) as f64) * 100.0 / t as f64),
        _ => "N/A".into(),
    }
}

enum Kind {
    Import,
    Blank,
    Clone,
    Upload,
    SourceRef,
}

/// The phase of work under way (or waiting to be retried) for this kind of source.
fn in_progress(kind: &Kind) -> Phase {
    match kind {
        Kind::Clone | Kind::SourceRef => Phase::CloneInProgress,
        _ => Phase::ImportInProgress,
    }
}

fn source_kind(dv: &DataVolume) -> Kind {
    match &dv.spec.source {
        Some(s) if s.blank.is_some() => Kind::Blank,
        Some(s) if s.pvc.is_some() || s.snapshot.is_some() => Kind::Clone,
        Some(s) if s.upload.is_some() => Kind::Upload,
        Some(_) => Kind::Import,
        None => Kind::SourceRef,
    }
}

/// The size the spec asks for, in bytes (validation has checked it parses).
pub fn requested_size(dv: &DataVolume) -> Option<u64> {
    dv.spec
        .pvc
        .as_ref()
        .or(dv.spec.storage.as_ref())
        .and_then(|t| t.storage_request())
        .and_then(|q| q.value().ok())
}

/// The decision for one DataVolume.
pub fn reconcile(dv: &DataVolume, seen: &Observed, now: Now) -> Decision {
    let ts = rfc3339(now);
    let prev = dv.status.clone().unwrap_or_default();
    let mut st = DataVolumeStatus {
        // Restarts: failed attempts that were (or will be) tried again; a fatal failure
        // is not retried.
        restart_count: i32::try_from(seen.failures.saturating_sub(u32::from(
            seen.last_failure.as_ref().is_some_and(|f| f.fatal),
        )))
        .unwrap_or(i32::MAX),
        claim_name: dv.metadata.name.clone(),
        ..prev.clone()
    };
    let mut d = Decision {
        status: DataVolumeStatus::default(),
        actions: Vec::new(),
        events: Vec::new(),
        requeue_after: None,
    };
    let kind = source_kind(dv);
    let size = requested_size(dv);
    let (phase, progress_text) = if seen.volume.is_some_and(|v| !v.awaiting_upload) {
        set(&mut st.conditions, "Bound", true, "Bound", "", &ts);
        set(&mut st.conditions, "Ready", true, "", "", &ts);
        set(&mut st.conditions, "Running", false, "Completed", "", &ts);
        (Phase::Succeeded, "100.0%".to_string())
    } else if let Some(f) = seen.last_failure.as_ref().filter(|f| f.fatal) {
        set(&mut st.conditions, "Ready", false, "Error", &f.message, &ts);
        set(
            &mut st.conditions,
            "Running",
            false,
            "Error",
            &f.message,
            &ts,
        );
        (
            Phase::Failed,
            prev.progress.clone().unwrap_or_else(|| "N/A".into()),
        )
    } else if let Some((done, total)) = seen.running {
        set(&mut st.conditions, "Bound", true, "Bound", "", &ts);
        set(&mut st.conditions, "Ready", false, "", "", &ts);
        set(&mut st.conditions, "Running", true, "", "", &ts);
        (in_progress(&kind), progress(done, total))
    } else {
        schedule(dv, seen, kind, size, now, &ts, &mut st, &mut d)
    };
    if prev.phase != Some(phase) {
        d.events.push(phase_event(dv, phase, seen));
    }
    st.phase = Some(phase);
    st.progress = Some(progress_text);
    d.status = st;
    d
}

/// Nothing running and not done: what to start, or what is waited for.
#[allow(clippy::too_many_arguments)]
fn schedule(
    dv: &DataVolume,
    seen: &Observed,
    kind: Kind,
    size: Option<u64>,
    now: Now,
    ts: &str,
    st: &mut DataVolumeStatus,
    d: &mut Decision,
) -> (Phase, String) {
    set(&mut st.conditions, "Ready", false, "", "", ts);
    if let Some(f) = &seen.last_failure {
        let wait = (f.at + backoff(seen.failures)).saturating_sub(now);
        if wait > 0 {
            set(
                &mut st.conditions,
                "Running",
                false,
                "Error",
                &f.message,
                ts,
            );
            d.requeue_after = Some(wait);
            let progress = st.progress.clone().unwrap_or_else(|| "N/A".into());
            return (in_progress(&kind), progress);
        }
    }
    set(&mut st.conditions, "Running", false, "", "", ts);
    set(&mut st.conditions, "Bound", false, "Pending", "", ts);
    let na = || "N/A".to_string();
    match kind {
        Kind::Import => {
            d.actions.push(Action::Import { size });
            (Phase::ImportScheduled, na())
        }
        Kind::Blank => match size {
            Some(size) => {
                d.actions.push(Action::CreateBlank { size });
                (Phase::ImportScheduled, na())
            }
            None => (Phase::Pending, na()),
        },
        Kind::Clone | Kind::SourceRef => match seen.clone_source {
            Some(src) => {
                d.actions.push(Action::Clone {
                    size: size.filter(|s| *s > src),
                });
                (Phase::CloneScheduled, na())
            }
            None => {
                let r = dv.spec.source_ref.as_ref();
                let (reason, message) = match (r, seen.data_source) {
                    (Some(r), false) => (
                        "DataSourceNotFound",
                        format!("DataSource {} not found", r.name),
                    ),
                    (Some(r), true) => (
                        "CloneSourceNotFound",
                        format!("the source of DataSource {} not found", r.name),
                    ),
                    (None, _) => (
                        "CloneSourceNotFound",
                        format!("source {} not found", clone_source_name(dv)),
                    ),
                };
                set(&mut st.conditions, "Bound", false, reason, &message, ts);
                (Phase::Pending, na())
            }
        },
        Kind::Upload => match (seen.volume, size) {
            (Some(_), _) => (Phase::UploadReady, na()),
            (None, Some(size)) => {
                d.actions.push(Action::PrepareUpload { size });
                (Phase::UploadScheduled, na())
            }
            (None, None) => (Phase::Pending, na()),
        },
    }
}

fn clone_source_name(dv: &DataVolume) -> String {
    let s = dv.spec.source.as_ref();
    let nn = s.and_then(|s| s.pvc.as_ref().or(s.snapshot.as_ref()));
    nn.map(|n| format!("{}/{}", n.namespace, n.name))
        .unwrap_or_default()
}

fn phase_event(dv: &DataVolume, phase: Phase, seen: &Observed) -> Event {
    let name = dv.metadata.name.as_deref().unwrap_or_default();
    match phase {
        Phase::Succeeded => match source_kind(dv) {
            Kind::Clone | Kind::SourceRef => Event::normal(
                "CloneSucceeded",
                format!("Successfully cloned into DataVolume {name}"),
            ),
            Kind::Blank => Event::normal(
                "BlankSucceeded",
                format!("Successfully created blank DataVolume {name}"),
            ),
            Kind::Upload => Event::normal(
                "UploadSucceeded",
                format!("Successfully uploaded into DataVolume {name}"),
            ),
            _ => Event::normal(
                "ImportSucceeded",
                format!("Successfully imported into DataVolume {name}"),
            ),
        },
        Phase::Failed => Event::warning(
            "ImportFailed",
            seen.last_failure
                .as_ref()
                .map(|f| f.message.clone())
                .unwrap_or_default(),
        ),
        Phase::ImportScheduled => {
            Event::normal("ImportScheduled", format!("Import into {name} scheduled"))
        }
        Phase::ImportInProgress => Event::normal(
            "ImportInProgress",
            format!("Import into {name} in progress"),
        ),
        Phase::CloneScheduled => {
            Event::normal("CloneScheduled", format!("Cloning into {name} scheduled"))
        }
        Phase::CloneInProgress => Event::normal(
            "CloneInProgress",
            format!("Cloning into {name} in progress"),
        ),
        Phase::UploadScheduled => {
            Event::normal("UploadScheduled", format!("Upload into {name} scheduled"))
        }
        Phase::UploadReady => Event::normal(
            "UploadReady",
            format!("Upload into {name} ready: platter upload {name} FILE"),
        ),
        Phase::Pending => Event::normal(
            "Pending",
            format!("DataVolume {name} is waiting for its source"),
        ),
        other => Event::normal("PhaseChanged", format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests;
