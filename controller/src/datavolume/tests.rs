//! Every DataVolume transition as a table: (source, what was observed) → phase,
//! progress, actions, restart count, conditions.

use platter_api::datavolume::DataVolumePhase as P;
use platter_api::{DataVolume, Object};

use super::*;

const NOW: Now = 1_796_590_800;

fn dv(source: &str, storage: &str) -> DataVolume {
    let yaml = format!(
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {{name: d}}\nspec:\n  source: {source}\n  storage: {storage}\n"
    );
    let mut docs = platter_api::parse_documents(&yaml).unwrap();
    match docs.remove(0).unwrap().object {
        Object::DataVolume(d) => d,
        other => panic!("{other:?}"),
    }
}

const HTTP: &str = "{http: {url: 'http://h/disk.qcow2'}}";
const GI: &str = "{resources: {requests: {storage: 1Gi}}}";

fn with_status(mut d: DataVolume, decision: &Decision) -> DataVolume {
    d.status = Some(decision.status.clone());
    d
}

fn cond<'a>(d: &'a Decision, t: &str) -> &'a str {
    d.status
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.status.as_str())
        .unwrap_or("-")
}

#[test]
fn an_import_goes_scheduled_in_progress_succeeded() {
    let d0 = dv(HTTP, GI);
    let first = reconcile(&d0, &Observed::default(), NOW);
    assert_eq!(first.status.phase, Some(P::ImportScheduled));
    assert_eq!(first.status.progress.as_deref(), Some("N/A"));
    assert_eq!(
        first.actions,
        [Action::Import {
            size: Some(1 << 30)
        }]
    );
    assert_eq!(first.events[0].reason, "ImportScheduled");

    let d1 = with_status(d0, &first);
    let seen = Observed {
        running: Some((45, Some(100))),
        ..Default::default()
    };
    let running = reconcile(&d1, &seen, NOW + 5);
    assert_eq!(running.status.phase, Some(P::ImportInProgress));
    assert_eq!(running.status.progress.as_deref(), Some("45.00%"));
    assert!(
        running.actions.is_empty(),
        "an import under way is not started again"
    );
    assert_eq!(
        (cond(&running, "Running"), cond(&running, "Ready")),
        ("True", "False")
    );
    // The same observation again (a restarted serve): the same decision, no new event.
    let d2 = with_status(d1, &running);
    let again = reconcile(&d2, &seen, NOW + 6);
    assert!(again.events.is_empty() && again.actions.is_empty());

    let done = Observed {
        volume: Some(Volume {
            size: 1 << 30,
            awaiting_upload: false,
        }),
        ..Default::default()
    };
    let ok = reconcile(&d2, &done, NOW + 10);
    assert_eq!(ok.status.phase, Some(P::Succeeded));
    assert_eq!(ok.status.progress.as_deref(), Some("100.0%"));
    assert_eq!(
        (cond(&ok, "Ready"), cond(&ok, "Bound"), cond(&ok, "Running")),
        ("True", "True", "False")
    );
    assert_eq!(ok.events[0].reason, "ImportSucceeded");
    assert!(ok.actions.is_empty());
}

#[test]
fn a_restart_mid_import_schedules_it_again() {
    // serve died during the import: its temporary volume is gone, nothing runs, the
    // status still says ImportInProgress. The import is started again.
    let mut d = dv(HTTP, GI);
    let st = DataVolumeStatus {
        phase: Some(P::ImportInProgress),
        progress: Some("45.00%".into()),
        ..Default::default()
    };
    d.status = Some(st);
    let again = reconcile(&d, &Observed::default(), NOW);
    assert_eq!(
        again.actions,
        [Action::Import {
            size: Some(1 << 30)
        }]
    );
    assert_eq!(again.status.phase, Some(P::ImportScheduled));
}

#[test]
fn retryable_failures_count_restarts_and_back_off() {
    let d = dv(HTTP, GI);
    let failure = |n: u32, at: Now| Observed {
        failures: n,
        last_failure: Some(Failure {
            message: "connection reset".into(),
            fatal: false,
            at,
        }),
        ..Default::default()
    };
    let waiting = reconcile(&d, &failure(1, NOW), NOW + 3);
    assert_eq!(waiting.status.restart_count, 1);
    assert_eq!(waiting.status.phase, Some(P::ImportInProgress));
    assert!(waiting.actions.is_empty());
    assert_eq!(waiting.requeue_after, Some(7));
    assert_eq!(cond(&waiting, "Running"), "False");
    let retry = reconcile(&d, &failure(1, NOW), NOW + 10);
    assert_eq!(
        retry.actions,
        [Action::Import {
            size: Some(1 << 30)
        }]
    );
    assert_eq!(retry.status.restart_count, 1);
    assert_eq!(
        reconcile(&d, &failure(3, NOW), NOW + 39).requeue_after,
        Some(1)
    );
    assert_eq!(backoff(1), 10);
    assert_eq!(backoff(20), 300);
}

#[test]
fn fatal_failures_fail_the_datavolume() {
    let d = dv(HTTP, GI);
    let seen = Observed {
        failures: 1,
        last_failure: Some(Failure {
            message: "checksum mismatch".into(),
            fatal: true,
            at: NOW,
        }),
        ..Default::default()
    };
    let f = reconcile(&d, &seen, NOW + 100);
    assert_eq!(f.status.phase, Some(P::Failed));
    assert!(f.actions.is_empty(), "a fatal failure is never retried");
    assert!(f.events[0].warning && f.events[0].message == "checksum mismatch");
    assert_eq!(cond(&f, "Ready"), "False");
    assert_eq!(
        f.status.restart_count, 0,
        "a fatal failure is not a restart"
    );
}

#[test]
fn blank_clone_upload_and_source_ref() {
    let blank = reconcile(&dv("{blank: {}}", GI), &Observed::default(), NOW);
    assert_eq!(blank.actions, [Action::CreateBlank { size: 1 << 30 }]);

    let clone = dv("{pvc: {namespace: default, name: base}}", "{}");
    let waiting = reconcile(&clone, &Observed::default(), NOW);
    assert_eq!(waiting.status.phase, Some(P::Pending));
    assert!(waiting.actions.is_empty());
    let bound = waiting
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Bound")
        .unwrap();
    assert_eq!(bound.reason, "CloneSourceNotFound");
    let seen = Observed {
        clone_source: Some(1 << 30),
        data_source: false,
        ..Default::default()
    };
    let go = reconcile(&clone, &seen, NOW);
    assert_eq!(go.status.phase, Some(P::CloneScheduled));
    assert_eq!(go.actions, [Action::Clone { size: None }]);
    // A larger target than the source: cloned, then grown.
    let big = dv(
        "{pvc: {namespace: default, name: base}}",
        "{resources: {requests: {storage: 2Gi}}}",
    );
    assert_eq!(
        reconcile(&big, &seen, NOW).actions,
        [Action::Clone {
            size: Some(2 << 30)
        }]
    );

    // A sourceRef: a clone of what its DataSource names.
    let yaml = "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: d}\nspec:\n  sourceRef: {kind: DataSource, name: golden}\n  storage: {}\n";
    let Object::DataVolume(by_ref) = platter_api::parse_documents(yaml)
        .unwrap()
        .remove(0)
        .unwrap()
        .object
    else {
        panic!()
    };
    let bound = |d: &Decision| {
        let c = d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Bound")
            .unwrap();
        (c.reason.clone(), c.message.clone())
    };
    let missing = reconcile(&by_ref, &Observed::default(), NOW);
    assert_eq!(missing.status.phase, Some(P::Pending));
    assert_eq!(
        bound(&missing),
        (
            "DataSourceNotFound".into(),
            "DataSource golden not found".into()
        )
    );
    let no_source = Observed {
        data_source: true,
        ..Default::default()
    };
    assert_eq!(
        bound(&reconcile(&by_ref, &no_source, NOW)).0,
        "CloneSourceNotFound"
    );
    let ready = reconcile(&by_ref, &seen, NOW);
    assert_eq!(ready.actions, [Action::Clone { size: None }]);
    assert_eq!(ready.status.phase, Some(P::CloneScheduled));

    let up = dv("{upload: {}}", GI);
    let first = reconcile(&up, &Observed::default(), NOW);
    assert_eq!(
        (first.status.phase, first.actions.clone()),
        (
            Some(P::UploadScheduled),
            vec![Action::PrepareUpload { size: 1 << 30 }]
        )
    );
    let ready = Observed {
        volume: Some(Volume {
            size: 1 << 30,
            awaiting_upload: true,
        }),
        ..Default::default()
    };
    assert_eq!(
        reconcile(&up, &ready, NOW).status.phase,
        Some(P::UploadReady)
    );
}

#[test]
fn progress_text() {
    assert_eq!(progress(0, Some(200)), "0.00%");
    assert_eq!(progress(1, Some(3)), "33.33%");
    assert_eq!(progress(5, None), "N/A");
    assert_eq!(progress(9, Some(0)), "N/A");
    assert_eq!(progress(300, Some(200)), "100.00%");
}
