//! Decoding one L2 table into what the streaming decoder waits for: runs of guest bytes
//! stored at consecutive host offsets (merged while contiguous in both), compressed
//! clusters, and zero ranges reported at once.
//!
//! Pure: entries are checked by [`Geometry::decode_l2`], nothing here does IO.

use crate::qcow2::l2::{ClusterMap, Geometry, Piece};
use crate::qcow2::FORMAT;
use crate::FormatError;

/// Longest merged data run (runs are merged only while contiguous in host and guest).
const MAX_RUN: u64 = 1 << 30;

/// A guest range waiting for host bytes `host..host+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) host: u64,
    pub(super) guest: u64,
    pub(super) len: u32,
    pub(super) compressed: bool,
}

fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn corrupt(detail: String) -> FormatError {
    FormatError::corrupt(FORMAT, detail)
}

/// Appends the runs and zero ranges of one L2 table used by L1 entry `l1_index`.
pub(super) fn table_runs(
    geom: &Geometry,
    l1_index: u64,
    table: &[u8],
    runs: &mut Vec<Run>,
    zeros: &mut Vec<(u64, u64)>,
) -> Result<(), FormatError> {
    let cs = geom.cluster_size();
    let entries = 1u64 << geom.l2_bits();
    let entry_len = geom.l2_entry_len();
    let vsize = geom.virtual_size;
    let mut zero = |g: u64, n: u64| match zeros.last_mut() {
        Some((zg, zn)) if *zg + *zn == g => *zn += n,
        _ => zeros.push((g, n)),
    };
    let data = |host: u64, guest: u64, n: u64, runs: &mut Vec<Run>| {
        if let Some(r) = runs.last_mut() {
            let len = u64::from(r.len);
            if !r.compressed && r.host + len == host && r.guest + len == guest && len + n <= MAX_RUN
            {
                r.len = (len + n) as u32;
                return;
            }
        }
        runs.push(Run {
            host,
            guest,
            len: n as u32,
            compressed: false,
        });
    };
    for j in 0..entries {
        let cluster = (l1_index << geom.l2_bits()) | j;
        let guest = cluster << geom.cluster_bits;
        if guest >= vsize {
            break;
        }
        let at = (j as usize) * entry_len;
        let entry = be64(table, at);
        let bitmap = if geom.extended_l2 {
            be64(table, at + 8)
        } else {
            0
        };
        let clen = cs.min(vsize - guest);
        match geom.decode_l2(entry, bitmap, cluster)? {
            ClusterMap::Unallocated | ClusterMap::Zero => zero(guest, clen),
            ClusterMap::Data { host } => data(host, guest, clen, runs),
            ClusterMap::Compressed { host, len } => runs.push(Run {
                host,
                guest,
                // At most 2^13 sectors (2 MiB clusters): fits.
                len: u32::try_from(len).unwrap_or(u32::MAX),
                compressed: true,
            }),
            map @ ClusterMap::Subclusters { .. } => {
                let mut in_cluster = 0;
                while in_cluster < clen {
                    let (piece, n) = map.piece_at(in_cluster, geom);
                    let n = n.min(clen - in_cluster);
                    match piece {
                        Piece::Data { host } => data(host, guest + in_cluster, n, runs),
                        Piece::Zero | Piece::Unallocated => zero(guest + in_cluster, n),
                        Piece::Compressed { .. } => {
                            return Err(corrupt(format!(
                                "guest cluster {cluster}: compressed subcluster"
                            )))
                        }
                    }
                    in_cluster += n;
                }
            }
        }
    }
    Ok(())
}
