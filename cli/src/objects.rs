//! `platter apply/get/describe/delete/wait/upload`: the declarative objects, as kubectl
//! users know these commands. The objects live in the store and are reconciled inside
//! `platter serve` (platter_control::objects); this file reads files, builds requests
//! and prints.

use std::fmt::Write as _;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use platter_api::Kind;
use platter_control::objects::{Applied, Stored};
use platter_control::{client, ErrorKind, Request, Response};

use crate::args::OutputFormat;
use crate::progress::Progress;
use crate::run::{control_socket, execute};
use crate::usage::Usage;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A YAML or JSON file of one or more documents, a directory of them, or -.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub file: PathBuf,
    /// Check every document (and what it references) without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// dv, das, vm, vmi, vmsnapshot, vmrestore, secrets, cm (or their plural and kind names).
    pub kind: String,
    /// One object (else every object of the kind).
    pub name: Option<String>,
    /// The namespace (default: `default`).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Every namespace (the default when no namespace is given and no NAME).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(Debug, Args)]
pub struct NamedArgs {
    /// The kind, as `get` takes it.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// The namespace (default: `default`).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub object: NamedArgs,
    /// Wait until the object and what it made are gone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub wait: bool,
    /// How long to wait (kubectl's durations: 90s, 5m, 1h, or seconds).
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub object: NamedArgs,
    /// condition=TYPE (status True), condition=TYPE=false, or delete.
    #[arg(long = "for", value_name = "condition=TYPE|delete")]
    pub for_: String,
    /// How long to wait (kubectl's durations: 90s, 5m, 1h, or seconds).
    #[arg(long, default_value = "30s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The DataVolume (its source is `upload: {}`).
    pub name: String,
    /// The image (any format import takes), or - for standard input.
    pub file: PathBuf,
    /// The namespace (default: `default`).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
}

/// kubectl's durations: `90s`, `5m`, `1h`, or plain seconds.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 30s, 5m, 1h)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration {s:?} (e.g. 30s, 5m, 1h)")),
    };
    Ok(Duration::from_secs(secs))
}

fn kind_of(text: &str) -> Result<Kind> {
    Kind::from_cli(text).ok_or_else(|| {
        Usage(format!(
            "{text:?} is not a kind platter knows: datavolumes (dv), virtualmachines (vm), virtualmachineinstances (vmi), virtualmachinesnapshots (vmsnapshot), virtualmachinerestores (vmrestore)"
        ))
        .into()
    })
}

/// `datavolume`, as kubectl names kinds in its messages.
fn lower(kind: Kind) -> String {
    kind.as_str().to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------
// apply

/// The files `-f` names: the file, `-`, or a directory's *.yaml, *.yml and *.json files in
/// name order.
fn inputs(path: &Path) -> Result<Vec<(String, String)>> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading standard input")?;
        return Ok(vec![("-".into(), text)]);
    }
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Usage(format!("{}: no such file or directory", path.display())).into()
        }
        _ => anyhow::Error::from(e).context(path.display().to_string()),
    })?;
    let mut files = Vec::new();
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
            })
            .collect();
        entries.sort();
        if entries.is_empty() {
            return Err(Usage(format!(
                "directory {} has no .yaml, .yml or .json files",
                path.display()
            ))
            .into());
        }
        files = entries;
    } else {
        files.push(path.to_path_buf());
    }
    files
        .into_iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            Ok((f.display().to_string(), text))
        })
        .collect()
}

pub fn apply(dir: &Path, a: ApplyArgs, output: OutputFormat) -> Result<()> {
    let files = inputs(&a.file)?;
    // A directory is checked whole before any of it is applied.
    if files.len() > 1 && !a.dry_run {
        for (file, text) in &files {
            execute(dir, apply_request(file, text, true), output)?;
        }
    }
    let mut all = Vec::new();
    for (file, text) in &files {
        match execute(dir, apply_request(file, text, a.dry_run), output)? {
            Response::Applied(applied) => all.push(applied),
            other => bail!("unexpected reply {other:?}"),
        }
    }
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&all)?),
        OutputFormat::Yaml => print!("{}", to_yaml(&serde_json::to_value(&all)?)),
        _ => all.iter().for_each(print_applied),
    }
    Ok(())
}

fn apply_request(file: &str, text: &str, dry_run: bool) -> Request {
    Request::Apply {
        file: file.to_string(),
        text: text.to_string(),
        dry_run,
    }
}

fn print_applied(a: &Applied) {
    let suffix = if a.dry_run { " (dry run)" } else { "" };
    for r in &a.results {
        println!("{}/{} {}{suffix}", lower(r.kind), r.name, r.action);
        if !r.ignored.is_empty() {
            println!("  accepted but not acted on: {}", r.ignored.join(", "));
        }
    }
}

// ---------------------------------------------------------------------------------------
// get, describe

fn query(dir: &Path, kind: Kind, name: Option<&str>, ns: Option<&str>) -> Result<Vec<Stored>> {
    let req = Request::ObjectGet {
        kind,
        name: name.map(str::to_string),
        namespace: ns.map(str::to_string),
    };
    match execute(dir, req, OutputFormat::Table)? {
        Response::Objects { items } => Ok(items),
        other => bail!("unexpected reply {other:?}"),
    }
}

pub fn get(dir: &Path, a: GetArgs, output: OutputFormat) -> Result<()> {
    let kind = kind_of(&a.kind)?;
    let ns = match (&a.namespace, a.all_namespaces, &a.name) {
        (Some(n), _, _) => Some(n.as_str()),
        (None, _, Some(_)) => Some("default"),
        (None, _, None) => None,
    };
    let items = query(dir, kind, a.name.as_deref(), ns)?;
    let docs: Vec<Value> = items.iter().map(Stored::document).collect();
    let one = a.name.is_some();
    let doc = if one {
        docs.into_iter().next().unwrap_or(Value::Null)
    } else {
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": docs})
    };
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
        OutputFormat::Yaml => print!("{}", to_yaml(&doc)),
        _ => {
            let show_ns = ns.is_none() && items.iter().any(|s| s.namespace() != "default");
            print!(
                "{}",
                table(kind, &items, output == OutputFormat::Wide, show_ns, now())
            );
            if items.is_empty() {
                eprintln!("No resources found.");
            }
        }
    }
    Ok(())
}

fn to_yaml(v: &Value) -> String {
    platter_api::document::to_yaml(v)
}

fn now() -> u64 {
    platter_control::objects::now()
}

/// kubectl's AGE: `45s`, `3m20s`, `25m`, `5h10m`, `20h`, `3d4h`, `30d`.
pub fn age(created: Option<&str>, now: u64) -> String {
    let Some(t) = created.and_then(platter_controller::parse_rfc3339) else {
        return "<unknown>".into();
    };
    let s = now.saturating_sub(t);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if d < 2 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The columns kubectl shows for each kind (CDI's and KubeVirt's printer columns).
fn table(kind: Kind, items: &[Stored], wide: bool, show_ns: bool, now: u64) -> String {
    let mut head: Vec<&str> = Vec::new();
    if show_ns {
        head.push("NAMESPACE");
    }
    let cols: &[&str] = match kind {
        Kind::DataVolume => &["NAME", "PHASE", "PROGRESS", "RESTARTS", "AGE"],
        Kind::DataSource => &["NAME", "AGE"],
        Kind::VirtualMachine => &["NAME", "AGE", "STATUS", "READY"],
        Kind::VirtualMachineInstance => &["NAME", "AGE", "PHASE", "READY"],
        Kind::VirtualMachineSnapshot => &[
            "NAME",
            "SOURCEKIND",
            "SOURCENAME",
            "PHASE",
            "READYTOUSE",
            "CREATIONTIME",
            "ERROR",
        ],
        Kind::VirtualMachineRestore => &[
            "NAME",
            "TARGETKIND",
            "TARGETNAME",
            "COMPLETE",
            "RESTORETIME",
            "ERROR",
        ],
        Kind::Secret => &["NAME", "TYPE", "DATA", "AGE"],
        Kind::ConfigMap => &["NAME", "DATA", "AGE"],
    };
    head.extend_from_slice(cols);
    if wide && kind == Kind::DataVolume {
        head.push("SOURCE");
    }
    let mut rows = vec![head.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for s in items {
        let o = &s.object;
        let st = &o["status"];
        let created = o["metadata"]["creationTimestamp"].as_str();
        let mut row = Vec::new();
        if show_ns {
            row.push(s.namespace().to_string());
        }
        row.push(s.name().to_string());
        match kind {
            Kind::DataVolume => {
                row.push(text(&st["phase"]));
                row.push(text(&st["progress"]));
                row.push(st["restartCount"].as_i64().unwrap_or(0).to_string());
                row.push(age(created, now));
                if wide {
                    let src = o["spec"]["source"]
                        .as_object()
                        .and_then(|m| m.keys().next().cloned())
                        .unwrap_or_else(|| "sourceRef".into());
                    row.push(src);
                }
            }
            Kind::VirtualMachine => {
                row.push(age(created, now));
                row.push(text(&st["printableStatus"]));
                row.push(if st["ready"] == true { "True" } else { "False" }.into());
            }
            Kind::DataSource => row.push(age(created, now)),
            Kind::VirtualMachineInstance => {
                row.push(age(created, now));
                row.push(text(&st["phase"]));
                let ready = st["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                    .is_some_and(|c| c["status"] == "True");
                row.push(if ready { "True" } else { "False" }.into());
            }
            Kind::VirtualMachineSnapshot => {
                row.push(text(&o["spec"]["source"]["kind"]));
                row.push(text(&o["spec"]["source"]["name"]));
                row.push(text(&st["phase"]));
                row.push(text(&st["readyToUse"]));
                row.push(text(&st["creationTime"]));
                row.push(text(&st["error"]["message"]));
            }
            Kind::VirtualMachineRestore => {
                row.push(text(&o["spec"]["target"]["kind"]));
                row.push(text(&o["spec"]["target"]["name"]));
                row.push(text(&st["complete"]));
                row.push(text(&st["restoreTime"]));
                row.push(text(&st["error"]["message"]));
            }
            Kind::Secret => {
                row.push(secret_type(o).to_string());
                row.push(data_keys(kind, o).len().to_string());
                row.push(age(created, now));
            }
            Kind::ConfigMap => {
                row.push(data_keys(kind, o).len().to_string());
                row.push(age(created, now));
            }
        }
        rows.push(row);
    }
    if items.is_empty() {
        return String::new();
    }
    crate::output::columns(&rows, 3)
}

pub fn describe(dir: &Path, a: NamedArgs) -> Result<()> {
    let kind = kind_of(&a.kind)?;
    let ns = a.namespace.as_deref().unwrap_or("default");
    let items = query(dir, kind, Some(&a.name), Some(ns))?;
    let Some(s) = items.first() else {
        bail!("{} {ns}/{} does not exist", kind, a.name)
    };
    print!("{}", describe_text(s, now()));
    Ok(())
}

/// `kubectl describe`'s layout: the header fields, spec and status as indented YAML,
/// then the events.
pub fn describe_text(s: &Stored, now: u64) -> String {
    let o = &s.object;
    let mut out = String::new();
    let _ = writeln!(out, "Name:         {}", s.name());
    let _ = writeln!(out, "Namespace:    {}", s.namespace());
    let _ = writeln!(out, "API Version:  {}", s.api_version);
    let _ = writeln!(out, "Kind:         {}", s.kind);
    let _ = writeln!(
        out,
        "Created:      {}",
        text(&o["metadata"]["creationTimestamp"])
    );
    if let Some(owner) = o["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|a| a.first())
    {
        let _ = writeln!(
            out,
            "Controlled By:  {}/{}",
            text(&owner["kind"]),
            text(&owner["name"])
        );
    }
    if !o["metadata"]["deletionTimestamp"].is_null() {
        let _ = writeln!(
            out,
            "Deleting:     since {}",
            text(&o["metadata"]["deletionTimestamp"])
        );
    }
    if !s.kind.reconciled() {
        describe_data(&mut out, s);
        return out;
    }
    for (title, key) in [("Spec", "spec"), ("Status", "status")] {
        let _ = writeln!(out, "{title}:");
        if o[key].is_null() {
            let _ = writeln!(out, "  <none>");
            continue;
        }
        for line in to_yaml(&o[key]).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    let _ = writeln!(out, "Events:");
    if s.events.is_empty() {
        let _ = writeln!(out, "  <none>");
        return out;
    }
    let mut rows = vec![[
        "Type".to_string(),
        "Reason".into(),
        "Age".into(),
        "Message".into(),
    ]];
    for e in &s.events {
        let age = match e.count {
            1 => age(Some(&e.last_timestamp), now),
            n => format!(
                "{} (x{n} over {})",
                age(Some(&e.last_timestamp), now),
                age(Some(&e.first_timestamp), now)
            ),
        };
        rows.push([e.type_.clone(), e.reason.clone(), age, e.message.clone()]);
    }
    let w: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let _ = writeln!(
            out,
            "  {:<a$}  {:<b$}  {:<c$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            a = w[0],
            b = w[1],
            c = w[2]
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// delete, wait

/// The keys of a Secret's or ConfigMap's `data` and `binaryData`, with the size of each
/// value in bytes (a Secret's `data` and `binaryData` are base64, a ConfigMap's `data`
/// is text).
fn data_keys(kind: Kind, o: &Value) -> Vec<(String, usize)> {
    // Apply checked the base64: its length gives the decoded size.
    let decoded = |v: &str| {
        let pad = v.bytes().rev().take_while(|b| *b == b'=').count();
        (v.len() / 4 * 3).saturating_sub(pad)
    };
    let mut out = Vec::new();
    for (map, encoded) in [("data", kind == Kind::Secret), ("binaryData", true)] {
        for (k, v) in o[map].as_object().into_iter().flatten() {
            let v = v.as_str().unwrap_or_default();
            let len = match encoded {
                true => decoded(v),
                false => v.len(),
            };
            out.push((k.clone(), len));
        }
    }
    out.sort();
    out
}

/// A Secret's `type`, `Opaque` when it gives none (as the API server defaults it).
fn secret_type(o: &Value) -> &str {
    o["type"].as_str().unwrap_or("Opaque")
}

/// kubectl's describe of a Secret (sizes only: the values stay out of terminals and
/// logs) or a ConfigMap (the values).
fn describe_data(out: &mut String, s: &Stored) {
    let o = &s.object;
    if s.kind == Kind::Secret {
        let _ = writeln!(out, "Type:         {}", secret_type(o));
    }
    let _ = writeln!(out, "\nData\n====");
    for (k, len) in data_keys(s.kind, o) {
        match (s.kind, o["data"][&k].as_str()) {
            (Kind::ConfigMap, Some(v)) => {
                let _ = writeln!(out, "{k}:\n----\n{v}");
            }
            _ => {
                let _ = writeln!(out, "{k}:  {len} bytes");
            }
        }
    }
}

pub fn delete(dir: &Path, a: DeleteArgs, output: OutputFormat) -> Result<()> {
    let kind = kind_of(&a.object.kind)?;
    let req = Request::ObjectDelete {
        kind,
        name: a.object.name.clone(),
        namespace: a.object.namespace.clone(),
    };
    execute(dir, req, output)?;
    if a.wait {
        wait_for(dir, kind, &a.object, &Condition::Deleted, a.timeout)?;
    }
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"deleted": {"kind": kind, "name": a.object.name}})
        ),
        _ => println!("{} \"{}\" deleted", lower(kind), a.object.name),
    }
    Ok(())
}

enum Condition {
    Deleted,
    Is { type_: String, status: String },
}

fn parse_for(s: &str) -> Result<Condition> {
    if s == "delete" {
        return Ok(Condition::Deleted);
    }
    let Some(rest) = s.strip_prefix("condition=") else {
        return Err(Usage(format!(
            "--for {s:?}: give condition=TYPE, condition=TYPE=false or delete"
        ))
        .into());
    };
    let (type_, status) = match rest.split_once('=') {
        Some((t, v)) => (t, v),
        None => (rest, "true"),
    };
    if type_.is_empty() {
        return Err(Usage(format!("--for {s:?}: the condition has no type")).into());
    }
    Ok(Condition::Is {
        type_: type_.to_ascii_lowercase(),
        status: status.to_ascii_lowercase(),
    })
}

pub fn wait(dir: &Path, a: WaitArgs, output: OutputFormat) -> Result<()> {
    let kind = kind_of(&a.object.kind)?;
    let cond = parse_for(&a.for_)?;
    wait_for(dir, kind, &a.object, &cond, a.timeout)?;
    let what = match &cond {
        Condition::Deleted => "deleted".to_string(),
        Condition::Is { type_, .. } => format!("condition met ({type_})"),
    };
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"kind": kind, "name": a.object.name, "met": what})
        ),
        _ => println!("{}/{} {what}", lower(kind), a.object.name),
    }
    Ok(())
}

fn wait_for(
    dir: &Path,
    kind: Kind,
    o: &NamedArgs,
    cond: &Condition,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let ns = o.namespace.as_deref().unwrap_or("default");
    loop {
        let found = match query(dir, kind, Some(&o.name), Some(ns)) {
            Ok(items) => items.into_iter().next(),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(e),
        };
        let met = match (cond, &found) {
            (Condition::Deleted, None) => true,
            (Condition::Deleted, Some(_)) => false,
            (Condition::Is { .. }, None) => {
                bail!("{} {ns}/{} does not exist", kind, o.name)
            }
            (Condition::Is { type_, status }, Some(s)) => s.object["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        text(&c["type"]).to_ascii_lowercase() == *type_
                            && text(&c["status"]).to_ascii_lowercase() == *status
                    })
                }),
        };
        if met {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {}s waiting for the condition on {}/{}",
                timeout.as_secs(),
                kind.plural(),
                o.name
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<platter_control::ControlError>()
        .is_some_and(|c| c.kind() == ErrorKind::NotFound)
}

// ---------------------------------------------------------------------------------------
// upload

pub fn upload(dir: &Path, a: UploadArgs, output: OutputFormat) -> Result<()> {
    let req = Request::Upload {
        name: a.name.clone(),
        namespace: a.namespace.clone(),
    };
    let sock = control_socket(dir);
    let Some(stream) = client::connect(&sock) else {
        // Without a server the request fails with the message that says to start one.
        execute(dir, req, output)?;
        bail!("no server answered on {}", sock.display());
    };
    let file;
    let stdin = std::io::stdin();
    let fd = if a.file == Path::new("-") {
        stdin.as_fd()
    } else {
        file = std::fs::File::open(&a.file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow::Error::from(Usage(format!("{}: no such file", a.file.display())))
            }
            _ => anyhow::Error::from(e).context(a.file.display().to_string()),
        })?;
        file.as_fd()
    };
    let mut progress = Progress::new(output);
    let resp = client::call_with_fds(stream, &sock, &req, &[fd], &mut |e| progress.event(e))?;
    match (output, resp) {
        (OutputFormat::Json, r) => crate::output::print(&r, OutputFormat::Json)?,
        (_, Response::Uploaded { name, volume }) => println!(
            "uploaded into DataVolume {name} (volume {}, {})",
            volume.name,
            platter_types::format_size(volume.size)
        ),
        (_, other) => bail!("unexpected reply {other:?}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_as_kubectl_prints_them() {
        let t0 = "2026-12-06T21:00:00Z";
        let base = platter_controller::parse_rfc3339(t0).unwrap();
        for (after, want) in [
            (5, "5s"),
            (119, "119s"),
            (200, "3m20s"),
            (25 * 60, "25m"),
            (5 * 3600 + 600, "5h10m"),
            (20 * 3600, "20h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (30 * 86_400, "30d"),
        ] {
            assert_eq!(age(Some(t0), base + after), want, "{after}");
        }
        assert_eq!(age(None, base), "<unknown>");
    }

    #[test]
    fn timeouts_and_conditions_parse_as_kubectl_takes_them() {
        assert_eq!(parse_timeout("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_timeout("90").unwrap(), Duration::from_secs(90));
        assert!(parse_timeout("5x").is_err());
        assert!(matches!(parse_for("delete").unwrap(), Condition::Deleted));
        match parse_for("condition=Ready=False").unwrap() {
            Condition::Is { type_, status } => {
                assert_eq!((type_.as_str(), status.as_str()), ("ready", "false"))
            }
            Condition::Deleted => panic!(),
        }
        assert!(parse_for("Ready").is_err());
    }
}
