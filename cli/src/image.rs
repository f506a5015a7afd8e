//! `platter import`, `platter push`, and the image cache behind `vm create --image`.
//!
//! Imports into the store go through the control API (a running server does the work, or
//! this process does when none runs; an import from `-` passes this process's stdin to
//! the server); imports to a file or a device run here. Ctrl-C or SIGTERM cancels an
//! import or push and leaves nothing behind (see `interrupt`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use platter_control::api::{ImportParams, PushParams};
use platter_control::{ErrorKind, Request, Response};
use platter_importer::sink::{DeviceSink, FileSink};
use platter_types::{format_size, Name, VolumeRef};

use crate::args::{ImportArgs, OutputFormat, PushArgs, RegistryArgs};
use crate::interrupt::Interrupts;
use crate::progress::Progress;
use crate::run::{execute, execute_interruptible};
use crate::usage::{kind, Usage};

/// A local path in SOURCE or DEST becomes absolute, so a server in another directory
/// finds it; URLs and registry references pass unchanged.
fn absolutize(reference: &str) -> Result<String> {
    for prefix in ["oci-archive:", "oci:"] {
        if let Some(rest) = reference.strip_prefix(prefix) {
            let (path, tag) = match rest.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') => (p, Some(t)),
                _ => (rest, None),
            };
            let abs = std::path::absolute(path)?;
            return Ok(format!(
                "{prefix}{}{}",
                abs.display(),
                tag.map(|t| format!(":{t}")).unwrap_or_default()
            ));
        }
    }
    if reference == "-" || reference.contains("://") {
        return Ok(reference.to_string());
    }
    Ok(std::path::absolute(reference)?.display().to_string())
}

fn import_params(a: &ImportArgs) -> Result<ImportParams> {
    Ok(ImportParams {
        format: Some(a.format.clone()),
        checksum: a.checksum.clone(),
        size: a.size,
        registry: a.registry.params(),
        // Absolute, so a server in another directory finds it.
        backing: a
            .backing
            .as_ref()
            .map(|b| std::path::absolute(b).with_context(|| format!("--backing {}", b.display())))
            .transpose()?,
    })
}

pub fn import(dir: &Path, a: ImportArgs, output: OutputFormat) -> Result<()> {
    let source = absolutize(&a.source)?;
    let params = import_params(&a)?;
    let report = match (&a.name, &a.to_file, &a.to_device) {
        (Some(name), _, _) => {
            match execute_interruptible(
                dir,
                Request::Import {
                    source,
                    name: name.clone(),
                    params,
                },
                output,
                "import",
            )? {
                Response::Imported { report, volume } => {
                    if output == OutputFormat::Table {
                        println!(
                            "imported {} into volume {} ({}, {} allocated)",
                            a.source,
                            volume.name,
                            format_size(volume.size),
                            format_size(volume.allocated)
                        );
                    }
                    report
                }
                other => bail!("unexpected reply {other:?}"),
            }
        }
        (None, Some(path), _) => {
            let interrupts = Interrupts::watch()?;
            let mut opts = platter_control::transfer::import_options(&params)?;
            opts.cancel = interrupts.cancel_flag();
            let sink = FileSink::create(path)?;
            let mut progress = Progress::new(output);
            let imported =
                platter_control::transfer::with_events(&mut |e| progress.event(e), |p| {
                    platter_importer::import(&source, sink, &opts, p)
                });
            drop(progress);
            let (report, out) = interrupts.outcome(imported.map_err(Into::into), "import")?;
            if output == OutputFormat::Table {
                println!("imported {} into {}", a.source, out.display());
            }
            serde_json::to_value(&report)?
        }
        (None, None, Some(dev)) => {
            let interrupts = Interrupts::watch()?;
            let mut opts = platter_control::transfer::import_options(&params)?;
            opts.cancel = interrupts.cancel_flag();
            let sink = DeviceSink::open(dev)?;
            let mut progress = Progress::new(output);
            let imported =
                platter_control::transfer::with_events(&mut |e| progress.event(e), |p| {
                    platter_importer::import(&source, sink, &opts, p)
                });
            drop(progress);
            let (report, _) = interrupts.outcome(imported.map_err(Into::into), "import")?;
            if output == OutputFormat::Table {
                println!("imported {} onto {}", a.source, dev.display());
            }
            serde_json::to_value(&report)?
        }
        (None, None, None) => bail!("import needs NAME, --to-file or --to-device"),
    };
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// DEST always names its transport; a bare `HOST[:PORT]/REPO:TAG` is a registry
/// reference that lacks `docker://`, never a local path.
fn check_push_dest(dest: &str) -> Result<(), Usage> {
    if dest.contains("://") || dest.starts_with("oci:") || dest.starts_with("oci-archive:") {
        return Ok(());
    }
    let host = dest.split_once('/').map(|(h, _)| h);
    let registry_like =
        host.is_some_and(|h| h == "localhost" || h.contains('.') || h.contains(':'));
    let hint = if registry_like {
        format!("; did you mean docker://{dest}?")
    } else {
        String::new()
    };
    Err(Usage(format!(
        "push destination {dest:?} names no transport{hint} \
         (DEST is docker://HOST[:PORT]/REPO:TAG, oci:DIR:TAG or oci-archive:FILE:TAG)"
    )))
}

pub fn push(dir: &Path, a: PushArgs, output: OutputFormat) -> Result<()> {
    check_push_dest(&a.dest)?;
    let dest = absolutize(&a.dest)?;
    let params = PushParams {
        disk_format: Some(a.disk_format),
        compression: Some(a.compression),
        registry: a.registry.params(),
    };
    match execute_interruptible(
        dir,
        Request::Push {
            target: a.target.clone(),
            dest,
            params,
        },
        output,
        "push",
    )? {
        Response::Pushed { report } => {
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                OutputFormat::Table => println!(
                    "pushed {} to {} ({})",
                    a.target,
                    a.dest,
                    report["manifest_digest"].as_str().unwrap_or("?")
                ),
            }
            Ok(())
        }
        other => bail!("unexpected reply {other:?}"),
    }
}

/// A registry reference pinned to `digest` (`docker://HOST/REPO:TAG` → `…/REPO@digest`).
fn pin(source: &str, digest: &str) -> String {
    let Some(rest) = source.strip_prefix("docker://") else {
        return source.to_string();
    };
    if rest.contains('@') {
        return source.to_string();
    }
    let (head, last) = rest.rsplit_once('/').unwrap_or(("", rest));
    let repo = last.split_once(':').map_or(last, |(r, _)| r);
    let prefix = if head.is_empty() {
        String::new()
    } else {
        format!("{head}/")
    };
    format!("docker://{prefix}{repo}@{digest}")
}

/// The cached, read-only base of an image for `vm create --image`: imported once into
/// volume `img-<key>` and snapshotted as `@base`; reused after. For a registry image the
/// key is its manifest digest (resolved first, and the import pinned to it), so a moved
/// tag gets a new cache entry; for other sources it is the sha256 of the reference.
///
/// Several `vm create` may race here for the same image (three VMs created at once): the
/// loser of the import or of the snapshot finds the winner's result and uses it.
pub fn ensure_cached(dir: &Path, image: &str, registry: &RegistryArgs) -> Result<VolumeRef> {
    let mut source = absolutize(image)?;
    let params = ImportParams {
        format: None,
        checksum: None,
        size: None,
        registry: registry.params(),
        backing: None,
    };
    let opts = platter_control::transfer::import_options(&params)?;
    let key = match platter_importer::resolve_digest(&source, &opts)
        .with_context(|| format!("resolving image {image}"))?
    {
        Some(digest) => {
            source = pin(&source, &digest);
            hex_prefix(&Sha256::digest(digest.as_bytes()))
        }
        None => hex_prefix(&Sha256::digest(source.as_bytes())),
    };
    let name = Name::new(&format!("img-{key}"))?;
    let base = VolumeRef {
        volume: name.clone(),
        snapshot: Some(Name::new("base")?),
    };
    // Only "not found" means absent: any other failure to look is reported.
    let exists = |target: &VolumeRef| -> Result<bool> {
        let inspected = execute(
            dir,
            Request::VolumeInspect {
                target: target.clone(),
            },
            OutputFormat::Table,
        );
        match inspected {
            Ok(_) => Ok(true),
            Err(e) if kind(&e) == Some(ErrorKind::NotFound) => Ok(false),
            Err(e) => Err(e.context(format!("looking for the cached image {image}"))),
        }
    };
    if exists(&base)? {
        return Ok(base);
    }
    // A half-made cache entry (imported, never snapshotted) is finished, not re-imported.
    let volume = VolumeRef::volume(name.clone());
    if !exists(&volume)? {
        // Ctrl-C here cancels the import and waits until its temporary volume is gone.
        let imported = execute_interruptible(
            dir,
            Request::Import {
                source,
                name: name.clone(),
                params,
            },
            OutputFormat::Table,
            "import",
        );
        match imported {
            Err(e) if e.is::<crate::interrupt::Interrupted>() => return Err(e),
            // Imports are atomic: if the volume exists now, a concurrent import made it.
            Err(e) if !exists(&volume).unwrap_or(false) => {
                return Err(e.context(format!("importing image {image}")))
            }
            _ => {}
        }
    }
    let snapshot = execute(
        dir,
        Request::VolumeSnapshot {
            volume: name,
            snapshot: Name::new("base")?,
        },
        OutputFormat::Table,
    );
    match snapshot {
        Ok(_) => Ok(base),
        Err(e) if kind(&e) == Some(ErrorKind::AlreadyExists) => Ok(base),
        Err(_) if exists(&base).unwrap_or(false) => Ok(base),
        Err(e) => Err(e.context(format!("snapshotting the cached image {image}"))),
    }
}

fn hex_prefix(d: &[u8]) -> String {
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::{check_push_dest, pin};

    #[test]
    fn bare_push_destinations_are_refused_with_a_hint() {
        let e = check_push_dest("127.0.0.1:5000/x:v1").unwrap_err().0;
        assert!(
            e.contains("did you mean docker://127.0.0.1:5000/x:v1?"),
            "{e}"
        );
        let e = check_push_dest("out/disk").unwrap_err().0;
        assert!(!e.contains("did you mean"), "{e}");
        for ok in ["docker://h/r:t", "oci:/tmp/l:t", "oci-archive:/tmp/a.tar:t"] {
            assert!(check_push_dest(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn pins_registry_references_to_a_digest() {
        let d = "sha256:abc";
        assert_eq!(
            pin("docker://127.0.0.1:5000/a/b:v1", d),
            "docker://127.0.0.1:5000/a/b@sha256:abc"
        );
        assert_eq!(
            pin("docker://127.0.0.1:5000/a/b", d),
            "docker://127.0.0.1:5000/a/b@sha256:abc"
        );
        assert_eq!(pin("docker://h/r@sha256:xyz", d), "docker://h/r@sha256:xyz");
        assert_eq!(pin("/tmp/disk.qcow2", d), "/tmp/disk.qcow2");
    }
}
