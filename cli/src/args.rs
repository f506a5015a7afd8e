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
    /// Output format: tables for people, one JSON document for scripts (`get` also takes
    /// yaml, and wide for more columns).
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// No progress and no messages on standard error (errors still are; results still go
    /// to standard output).
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also say how the work is done: which member of a layer is read, that a stream is
    /// decoded in one pass, how a push lays out its layer.
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
    Wide,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, inspect, snapshot, clone, export and delete volumes.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Import an image (file, -, http(s)://, docker://, oci:, oci-archive:) into a volume,
    /// a raw file or a block device.
    Import(ImportArgs),
    /// Push a volume or snapshot as a KubeVirt containerDisk.
    Push(PushArgs),
    /// Serve every volume over NBD (and FUSE); other commands go through it meanwhile.
    Serve(crate::serve::ServeArgs),
    /// Run VMs from volumes or images.
    #[command(subcommand)]
    Vm(crate::vm::VmCmd),
    /// Create or update KubeVirt/CDI objects from YAML (a file, a directory, or -).
    Apply(crate::objects::ApplyArgs),
    /// List objects of a kind (dv, das, vm, vmi, vmsnapshot, vmrestore, secrets, cm), or show one.
    Get(crate::objects::GetArgs),
    /// Show an object: spec, status, conditions and events.
    Describe(crate::objects::NamedArgs),
    /// Delete an object and what it made (a VM's domain and disks, a DataVolume's volume).
    Delete(crate::objects::DeleteArgs),
    /// Wait until an object has a condition, or is gone.
    Wait(crate::objects::WaitArgs),
    /// Fill a DataVolume that has an upload source from FILE or - (standard input).
    Upload(crate::objects::UploadArgs),
    /// Print the shell completion script for SHELL (e.g. `platter completion bash >
    /// /etc/bash_completion.d/platter`).
    Completion {
        /// The shell the script is for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (platter.1, and platter-volume-create.1 … for every
    /// subcommand) into DIR.
    Man {
        /// The directory the pages go to (made if missing).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create an empty (sparse) volume.
    Create {
        /// The new volume's name (lower-case letters, digits, `.`, `_`, `-`; at most 63).
        name: Name,
        /// Its size: bytes, or with K, M, G, T or P (binary; `1.5G` allowed); a multiple of 512.
        #[arg(long, value_parser = parse_size)]
        size: u64,
    },
    /// List volumes and snapshots.
    List {
        /// Also the image cache's volumes (`img-…`: one per containerDisk digest, that
        /// `vm create --image` and declarative containerDisks clone).
        #[arg(long)]
        all: bool,
    },
    /// Size, allocated bytes, chain, snapshots and clones of a volume or snapshot.
    Inspect {
        /// NAME or NAME@SNAP.
        target: VolumeRef,
    },
    /// Take a read-only, point-in-time snapshot NAME@SNAP (O(1)).
    Snapshot {
        /// NAME@SNAP: the volume, and the new snapshot's name.
        target: VolumeRef,
    },
    /// Make a writable volume NEW from SRC or SRC@SNAP (O(1)).
    Clone {
        /// SRC or SRC@SNAP (a volume is snapshotted at this instant).
        source: VolumeRef,
        /// The new volume's name.
        name: Name,
    },
    /// Grow a volume.
    Resize {
        /// The volume.
        name: Name,
        /// The new size (not smaller than the current one), as for `volume create`.
        #[arg(long, value_parser = parse_size)]
        size: u64,
    },
    /// Delete a volume (with its snapshots) or one snapshot.
    Delete {
        /// NAME (with all its snapshots) or NAME@SNAP; refused while a VM or a clone uses it.
        target: VolumeRef,
    },
    /// Write a volume or snapshot to a raw or qcow2 file.
    Export(ExportArgs),
    /// Reclaim unreferenced layers and seal frozen ones; prints the bytes freed.
    Gc,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// NAME or NAME@SNAP.
    pub target: VolumeRef,
    /// The output file (written as FILE.partial, renamed when complete).
    pub file: PathBuf,
    /// The output format: a sparse raw file, or a qcow2 image.
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

/// Registry and HTTP options shared by `import`, `push` and `vm create --image`.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// USER:PASS (or :TOKEN for a bearer token).
    #[arg(long, conflicts_with = "authfile")]
    pub creds: Option<String>,
    /// A containers/docker auth.json.
    #[arg(long)]
    pub authfile: Option<PathBuf>,
    /// Verify TLS certificates (and refuse plain HTTP outside localhost).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: bool,
    /// Extra CA certificates (*.crt, *.pem) for registries and HTTPS.
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// Platform picked from an image index.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// FILE, - (standard input), http(s)://URL, docker://HOST/REPO:TAG, oci:DIR[:TAG] or
    /// oci-archive:FILE[:TAG]; gz, xz, zstd and bz2 are unpacked on the way.
    pub source: String,
    /// The new volume.
    #[arg(required_unless_present_any = ["to_file", "to_device"], conflicts_with_all = ["to_file", "to_device"])]
    pub name: Option<Name>,
    /// Write a sparse raw file instead of a volume.
    #[arg(long, conflicts_with = "to_device")]
    pub to_file: Option<PathBuf>,
    /// Write a block device instead of a volume.
    #[arg(long)]
    pub to_device: Option<PathBuf>,
    /// auto|raw|qcow2|vmdk|vhd|vhdx|vdi|iso
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// sha256:HEX, sha512:HEX or md5:HEX of the source as downloaded.
    #[arg(long)]
    pub checksum: Option<String>,
    /// Disk size when the source does not say (and the bound for decompressed data).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// The backing image (raw or qcow2) of a qcow2 overlay: the import is the merged disk.
    #[arg(long, value_name = "FILE")]
    pub backing: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The volume or snapshot (NAME or NAME@SNAP) to push.
    pub target: VolumeRef,
    /// docker://HOST[:PORT]/REPO:TAG, oci:DIR:TAG or oci-archive:FILE:TAG
    pub dest: String,
    /// raw|qcow2
    #[arg(long, default_value = "qcow2")]
    pub disk_format: String,
    /// gzip|zstd|none
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl RegistryArgs {
    pub fn params(&self) -> platter_control::api::RegistryParams {
        platter_control::api::RegistryParams {
            creds: self.creds.clone(),
            authfile: self
                .authfile
                .as_ref()
                .and_then(|p| std::path::absolute(p).ok()),
            tls_verify: self.tls_verify,
            cert_dir: self
                .cert_dir
                .as_ref()
                .and_then(|p| std::path::absolute(p).ok()),
            platform: Some(self.platform.clone()),
            ..Default::default()
        }
    }
}
