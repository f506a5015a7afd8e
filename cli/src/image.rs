//! `platter import` and `platter push` (the image cache behind `vm create --image` is
//! `platter_control::vm::ensure_image`).
//!
//! Imports into the store go through the control API (a running server does the work, or
//! this process does when none runs; an import from `-` passes this process's stdin to
//! the server); imports to a file or a device run here. Ctrl-C or SIGTERM cancels an
//! import or push and leaves nothing behind (see `interrupt`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use platter_control::api::{ImportParams, PushParams};
use platter_control::{Request, Response};
use platter_importer::sink::{DeviceSink, FileSink};
use platter_types::format_size;

use crate::args::{ImportArgs, OutputFormat, PushArgs};
use crate::interrupt::Interrupts;
use crate::progress::Progress;
use crate::run::execute_interruptible;
use crate::usage::Usage;

/// A local path in SOURCE or DEST becomes absolute, so a server in another directory
/// finds it; URLs and registry references pass unchanged.
pub(crate) fn absolutize(reference: &str) -> Result<String> {
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
                Response::Imported { mut report, volume } => {
                    if output == OutputFormat::Table {
                        println!(
                            "imported {} into volume {} ({}, {} allocated)",
                            a.source,
                            volume.name,
                            format_size(volume.size),
                            format_size(volume.allocated)
                        );
                    }
                    // The new volume, as `volume inspect -o json` shows it.
                    report["volume"] = serde_json::to_value(&volume)?;
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
            let mut report = serde_json::to_value(&report)?;
            report["file"] = serde_json::to_value(&out)?;
            report
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
            let mut report = serde_json::to_value(&report)?;
            report["device"] = serde_json::to_value(dev)?;
            report
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
                _ => println!(
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

#[cfg(test)]
mod tests {
    use super::check_push_dest;

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
}
