//! `platter-bench`: benchmarks that run platter and its peers in the same run and print a
//! table of ratios (absolute numbers on shared 2-core machines move 2x between runs).
//!
//! `platter-bench store [--out FILE]`: snapshot/clone latency by volume size, 4 KiB read
//! rate by chain depth against `qemu-img bench` on qcow2 chains, sequential store IO
//! against plain file IO, and store operations by the number of volumes in the store.
//!
//! `platter-bench store-ops [--out FILE]`: that last table alone.
//!
//! `platter-bench import [--out FILE]`: `platter import` (qcow2 file, raw.gz over HTTP,
//! containerDisk from a local registry) against qemu-img, curl | gunzip and skopeo.
//!
//! `platter-bench vm [--out FILE]`: `platter vm create --image docker://…` to the guest's
//! first console line and boot marker against pull-then-boot (skopeo, qemu-img, `virsh
//! create`), and the extra disk space per VM for ten VMs from one image.
//!
//! `platter-bench declarative [--out FILE]`: `platter apply` of a VM with a registry
//! dataVolumeTemplate to its boot marker against import + `vm create` by hand, and
//! 1,000 DataVolumes with 200 VMs (`get` times, store operations under them).

mod declarative;
mod import;
mod nbd;
mod store;
mod store_ops;
mod table;
mod vm;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "platter-bench")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The volume store against plain files and qemu-img.
    Store {
        /// Also write the table (markdown) to this file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Directory for the stores and images (default: a temp dir under target/).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Store operations (create, snapshot, clone, delete) at 10, 1,000, 10,000 volumes.
    StoreOps {
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Directory for the store (default: a temp dir under target/).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// NBD servers: ours, qemu-nbd, nbdkit, driven by fio.
    Nbd {
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// The platter binary to serve with.
        #[arg(long, default_value = "target/release/platter")]
        platter: std::path::PathBuf,
        /// Seconds per fio run.
        #[arg(long, default_value_t = 6)]
        runtime: u32,
        /// Rounds of every workload (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 20809)]
        tcp_port: u16,
    },
    /// Imports: ours (`platter import`) against qemu-img convert, curl | gunzip, skopeo.
    Import {
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// The platter binary to import with.
        #[arg(long, default_value = "target/release/platter")]
        platter: std::path::PathBuf,
        /// Directory for the images, stores and results (default: a temp dir under target/).
        #[arg(long, default_value = "target")]
        dir: std::path::PathBuf,
        /// Runs of every contender; the best is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// VMs: `platter vm create --image` against pull-then-boot with `virsh create`.
    Vm {
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// The platter binary to run VMs with.
        #[arg(long, default_value = "target/release/platter")]
        platter: std::path::PathBuf,
        /// Runs of every contender; best and median are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Declarative objects: apply-to-boot against by hand, and 1,000 DataVolumes.
    Declarative {
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        #[arg(long, default_value = "target/release/platter")]
        platter: std::path::PathBuf,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let (report, out) = match cli.cmd {
        Cmd::Store { out, dir } => (store::run(dir.as_deref())?, out),
        Cmd::StoreOps { out, dir } => (store::run_ops(dir.as_deref())?, out),
        Cmd::Nbd {
            out,
            platter,
            runtime,
            rounds,
            tcp_port,
        } => {
            let tmp = tempfile::Builder::new()
                .prefix("platter-bench-nbd-")
                .tempdir_in("target")?;
            let platter = std::path::absolute(platter)?;
            let report = nbd::run_all(tmp.path(), &platter, runtime, rounds, tcp_port)?;
            (report, out)
        }
        Cmd::Import {
            out,
            platter,
            dir,
            runs,
        } => {
            let platter = std::path::absolute(platter)?;
            (import::run(&dir, &platter, runs)?, out)
        }
        Cmd::Vm { out, platter, runs } => {
            let platter = std::path::absolute(platter)?;
            (vm::run_all(&platter, runs)?, out)
        }
        Cmd::Declarative { out, platter, runs } => {
            let platter = std::path::absolute(platter)?;
            (declarative::run(&platter, runs)?, out)
        }
    };
    println!("{report}");
    if let Some(out) = out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
