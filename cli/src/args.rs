//! The command-line grammar (shared/guide/cli.md is the contract; names never change).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use platter_types::{Name, VolumeRef};

#[derive(Debug, Parser)]
#[command(
    name = "platter",
    version,
    about = "VM images and disks: volumes, NBD serving, imports, VMs"
)]
pub struct Cli {
    /// Store directory [default: $PLATTER_STORE, /var/lib/platter for root, else $XDG_DATA_HOME/platter]
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Output format: tables for people, one JSON document for scripts.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, inspect, snapshot, clone, export and delete volumes.
    #[command(subcommand)]
    Volume(VolumeCmd),
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create an empty (sparse) volume.
    Create {
        name: Name,
        #[arg(long, value_parser = parse_size)]
        size: u64,
    },
    /// List volumes and snapshots.
    List,
    /// Size, allocated bytes, chain, snapshots and clones of a volume or snapshot.
    Inspect { target: VolumeRef },
    /// Take a read-only, point-in-time snapshot NAME@SNAP (O(1)).
    Snapshot { target: VolumeRef },
    /// Make a writable volume NEW from SRC or SRC@SNAP (O(1)).
    Clone { source: VolumeRef, name: Name },
    /// Grow a volume.
    Resize {
        name: Name,
        #[arg(long, value_parser = parse_size)]
        size: u64,
    },
    /// Delete a volume (with its snapshots) or one snapshot.
    Delete { target: VolumeRef },
    /// Write a volume or snapshot to a raw or qcow2 file.
    Export(ExportArgs),
    /// Reclaim unreferenced layers and seal frozen ones; prints the bytes freed.
    Gc,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub target: VolumeRef,
    pub file: PathBuf,
    #[arg(long, value_enum, default_value_t = ExportFormatArg::Raw)]
    pub format: ExportFormatArg,
    /// Compress qcow2 clusters.
    #[arg(long, value_enum)]
    pub compress: Option<CompressArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormatArg {
    Raw,
    Qcow2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressArg {
    Zlib,
    Zstd,
}

fn parse_size(s: &str) -> Result<u64, String> {
    platter_types::parse_size(s).map_err(|e| e.to_string())
}
