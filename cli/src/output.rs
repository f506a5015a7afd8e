//! Printing responses: aligned tables and sentences for people, one JSON document for
//! scripts.

use anyhow::Result;

use platter_control::api::VolumeInfoWire;
use platter_control::Response;
use platter_types::format_size;

use crate::args::OutputFormat;

pub fn print(resp: &Response, format: OutputFormat) -> Result<()> {
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&json_of(resp))?);
        return Ok(());
    }
    match resp {
        Response::Volume(v) => print_volume(v),
        Response::Volumes { items } => print_table(items),
        Response::Deleted { target } => println!("deleted {target}"),
        Response::Exported {
            target,
            path,
            bytes_written,
            allocated,
        } => println!(
            "exported {target} to {} ({} of data, {} allocated)",
            path.display(),
            format_size(*bytes_written),
            format_size(*allocated)
        ),
        Response::Gc(g) => println!(
            "freed {}; {} removed, {} sealed, {} deduplicated",
            size_and_bytes(g.bytes_freed),
            count(g.layers_removed as u64, "layer"),
            g.layers_sealed,
            g.layers_deduplicated
        ),
        Response::Pong { pid } => println!("server pid {pid}"),
        Response::Vm { record } => println!("{}", record["name"].as_str().unwrap_or("?")),
        Response::Vms { items } => items
            .iter()
            .for_each(|r| println!("{}", r["name"].as_str().unwrap_or("?"))),
        Response::VmRemoved { name } => println!("deleted vm {name}"),
        Response::Imported { volume, .. } => println!("imported volume {}", volume.name),
        Response::Pushed { report } => {
            println!("pushed {}", report["destination"].as_str().unwrap_or("?"))
        }
        // `platter vm` prints these itself (cli/src/vm.rs); names for anyone else.
        Response::VmInfo { vm } => println!("{} {}", vm.name, vm.state),
        Response::VmInfos { items } => items
            .iter()
            .for_each(|vm| println!("{} {}", vm.name, vm.state)),
        Response::VmStopped { name, .. } => println!("stopped vm {name}"),
        Response::VmRequested { message, .. } => println!("{message}"),
        Response::VmDeleted { name, .. } => println!("deleted vm {name}"),
        Response::VmConsole { log, .. } => println!("{}", log.display()),
        Response::Image { base, .. } => println!("{base}"),
        // `apply`, `get` and friends print these themselves (cli/src/objects.rs).
        Response::Applied(a) => println!("{} objects", a.results.len()),
        Response::Objects { items } => items.iter().for_each(|s| println!("{}", s.describe())),
        Response::ObjectDeleting { kind, name } => println!("deleting {kind} {name}"),
        Response::Uploaded { name, .. } => println!("uploaded into DataVolume {name}"),
    }
    Ok(())
}

/// The JSON document for a response: the object itself, not the response envelope.
fn json_of(resp: &Response) -> serde_json::Value {
    let v = match resp {
        Response::Volume(v) => serde_json::to_value(v),
        Response::Volumes { items } => serde_json::to_value(items),
        Response::Deleted { target } => Ok(serde_json::json!({ "deleted": target })),
        Response::Exported {
            target,
            path,
            bytes_written,
            allocated,
        } => Ok(
            serde_json::json!({ "exported": target, "path": path, "bytes_written": bytes_written, "allocated": allocated }),
        ),
        Response::Gc(g) => serde_json::to_value(g),
        Response::Pong { pid } => Ok(serde_json::json!({ "pid": pid })),
        Response::Vm { record } => Ok(record.clone()),
        Response::Vms { items } => Ok(serde_json::Value::Array(items.clone())),
        Response::VmRemoved { name } => Ok(serde_json::json!({ "deleted": name })),
        Response::Imported { report, .. } => Ok(report.clone()),
        Response::Pushed { report } => Ok(report.clone()),
        Response::VmInfo { vm } => serde_json::to_value(vm),
        Response::VmInfos { items } => serde_json::to_value(items),
        Response::VmStopped { name, outcome } => {
            Ok(serde_json::json!({ "stopped": name, "outcome": outcome }))
        }
        Response::VmDeleted { name, volumes } => {
            Ok(serde_json::json!({ "deleted": name, "volumes": volumes }))
        }
        Response::VmRequested { name, message } => {
            Ok(serde_json::json!({ "requested": name, "message": message }))
        }
        Response::VmConsole { name, log, running } => {
            Ok(serde_json::json!({ "name": name, "log": log, "running": running }))
        }
        Response::Image { base, iso } => Ok(serde_json::json!({ "base": base, "iso": iso })),
        Response::Applied(a) => serde_json::to_value(a),
        Response::Objects { items } => Ok(serde_json::Value::Array(
            items.iter().map(|s| s.document()).collect(),
        )),
        Response::ObjectDeleting { kind, name } => {
            Ok(serde_json::json!({ "deleting": { "kind": kind, "name": name } }))
        }
        Response::Uploaded { name, volume } => {
            Ok(serde_json::json!({ "uploaded": name, "volume": volume }))
        }
    };
    v.unwrap_or(serde_json::Value::Null)
}

fn print_volume(v: &VolumeInfoWire) {
    let chain: Vec<String> = v
        .chain
        .iter()
        .map(|l| format!("{} ({})", short(&l.blob), format_size(l.allocated)))
        .collect();
    let rows = [
        ("name", v.name.clone()),
        ("kind", v.kind.clone()),
        ("size", size_and_bytes(v.size)),
        (
            "allocated",
            format!(
                "{} own, {} with its chain",
                format_size(v.allocated),
                format_size(v.chain_allocated)
            ),
        ),
        (
            "chain",
            format!(
                "{}: {}",
                count(v.chain.len() as u64, "layer"),
                chain.join(" <- ")
            ),
        ),
        ("snapshots", list_or_none(&v.snapshots)),
        ("clones", list_or_none(&v.clones)),
        ("origin", v.origin.clone().unwrap_or_else(|| "-".into())),
    ];
    for (k, val) in rows {
        println!("{k:<10} {val}");
    }
}

fn short(blob: &str) -> &str {
    blob.get(..blob.find('-').map_or(0, |i| i + 13).min(blob.len()))
        .unwrap_or(blob)
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

fn print_table(items: &[VolumeInfoWire]) {
    let header = ["NAME", "KIND", "SIZE", "ALLOCATED", "LAYERS", "ORIGIN"];
    let mut rows = vec![header.map(String::from).to_vec()];
    rows.extend(items.iter().map(|v| {
        vec![
            v.name.clone(),
            v.kind.clone(),
            format_size(v.size),
            format_size(v.allocated),
            v.chain.len().to_string(),
            v.origin.clone().unwrap_or_else(|| "-".into()),
        ]
    }));
    print!("{}", columns(&rows, 2));
}

/// Rows as left-aligned columns as wide as their widest cell, `gap` spaces apart (2 as
/// docker and virsh print, 3 as kubectl does), without trailing blanks.
pub fn columns(rows: &[Vec<String>], gap: usize) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let sep = " ".repeat(gap);
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join(&sep).trim_end());
        out.push('\n');
    }
    out
}

/// `1 layer`, `2 layers`.
fn count(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

/// A size in one style everywhere: `512 B`, or `1 MiB (1048576 bytes)` where the unit
/// rounds.
fn size_and_bytes(n: u64) -> String {
    match n < 1024 {
        true => format_size(n),
        false => format!("{} ({n} bytes)", format_size(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows: Vec<Vec<String>> = [
            &["NAME", "STATE", "DISKS"][..],
            &["a-very-long-vm-name-of-thirty-c", "running", "d1"],
            &["b", "shut off", ""],
        ]
        .iter()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
        assert_eq!(
            columns(&rows, 2),
            "NAME                             STATE     DISKS\n\
             a-very-long-vm-name-of-thirty-c  running   d1\n\
             b                                shut off\n"
        );
        assert_eq!(columns(&rows[..1], 3), "NAME   STATE   DISKS\n");
        assert_eq!(columns(&[], 2), "");
    }

    #[test]
    fn counts_and_sizes_read_as_english() {
        assert_eq!(count(1, "layer"), "1 layer");
        assert_eq!(count(0, "layer"), "0 layers");
        assert_eq!(count(3, "layer"), "3 layers");
        assert_eq!(size_and_bytes(0), "0 B");
        assert_eq!(size_and_bytes(512), "512 B");
        assert_eq!(size_and_bytes(1 << 20), "1 MiB (1048576 bytes)");
    }
}
