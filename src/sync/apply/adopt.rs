//! Learning the server's version of the files this computer placed there, from a listing.

use std::collections::BTreeMap;

use futures_util::stream::StreamExt;
use sha2::{Digest, Sha256};

use crate::remote::{ByteRange, ETag, Remote, RemoteError, RemotePath};
use crate::sync::remote_scan::etag_of;
use crate::sync::state::{Base, Kind, RemoteMeta};

/// [`adopt_uploaded`] for a run that starts after one was cut short between placing a file
/// and learning its version: meanwhile another client may have replaced it with a file of the
/// same size, which must not be taken for ours (our next change would then overwrite it
/// unseen). A listed file is adopted only when its content is the one we sent (its SHA-256 is
/// the base's); otherwise its version stays unknown, which the plan takes for a server change
/// (a download, or a conflict whose contents are compared first). `root` is the folder's
/// server path.
pub async fn adopt_uploaded_checked(
    remote: &dyn Remote,
    root: &RemotePath,
    bases: &BTreeMap<String, Base>,
    listed: &BTreeMap<String, RemoteMeta>,
) -> Result<Vec<(String, Base)>, RemoteError> {
    let mut out = Vec::new();
    for (rel, base) in adopt_uploaded(bases, listed) {
        let Some(sent) = bases.get(&rel).and_then(|b| b.local.hash) else {
            continue;
        };
        let rp = root.join_path(&rel)?;
        let expect = base
            .remote
            .etag
            .as_deref()
            .and_then(etag_of)
            .filter(|t| !t.is_stand_in());
        let hash = match server_hash(remote, &rp, expect.as_ref()).await {
            Ok(h) => h,
            Err(e @ (RemoteError::Transient { .. } | RemoteError::Auth { .. })) => return Err(e),
            // Gone or changed again since the listing: left unknown.
            Err(_) => continue,
        };
        if hash == sent {
            out.push((rel, base));
        }
    }
    Ok(out)
}

/// The SHA-256 of a server file (of version `expect`, when given).
pub(super) async fn server_hash(
    remote: &dyn Remote,
    rp: &RemotePath,
    expect: Option<&ETag>,
) -> Result<[u8; 32], RemoteError> {
    let resp = remote.read_range(rp, ByteRange::whole(), expect).await?;
    let mut hasher = Sha256::new();
    let mut body = resp.body;
    while let Some(chunk) = body.next().await {
        hasher.update(&chunk?);
    }
    Ok(hasher.finalize().into())
}

/// Completes the bases of files this computer placed on the server (whose version the
/// upload could not learn) from a listing: the listed file of the size we sent is ours.
/// Returns how many were completed.
pub fn adopt_uploaded(
    bases: &BTreeMap<String, Base>,
    listed: &BTreeMap<String, RemoteMeta>,
) -> Vec<(String, Base)> {
    let mut out = Vec::new();
    for (p, b) in bases {
        if b.remote.kind != Kind::File || b.remote.etag.is_some() {
            continue;
        }
        if let Some(r) = listed.get(p) {
            if r.kind == Kind::File && r.size == b.remote.size && r.etag.is_some() {
                out.push((
                    p.clone(),
                    Base {
                        local: b.local.clone(),
                        remote: r.clone(),
                    },
                ));
            }
        }
    }
    out
}
