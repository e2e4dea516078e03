//! The daemon's answers to control requests: the [`ControlHandler`] over the mounted [`Vfs`].
//! A new verb of [`Request`] gets its arm here; the transport ([`crate::control::server`])
//! stays as it is.

use std::sync::Arc;

use async_trait::async_trait;

use crate::control::{ControlHandler, FolderStates, Request, Response};
use crate::vfs::Vfs;

/// Answers control requests about one mount.
pub(crate) struct Requests {
    vfs: Arc<Vfs>,
}

impl Requests {
    pub(crate) fn new(vfs: Arc<Vfs>) -> Self {
        Requests { vfs }
    }
}

#[async_trait]
impl ControlHandler for Requests {
    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Status => {
                // The snapshot takes locks and reads the metadata store: off the async threads.
                let vfs = self.vfs.clone();
                match tokio::task::spawn_blocking(move || vfs.status()).await {
                    Ok(mut status) => {
                        status.bandwidth = crate::remote::throttle::Bandwidth::process().limits();
                        Response::Status(Box::new(status))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "status snapshot failed");
                        Response::error(format!("the status could not be taken: {e}"))
                    }
                }
            }
            Request::Pin { path, keep } => {
                let vfs = &self.vfs;
                let answer = match vfs.resolve(&path).await {
                    Ok(ino) if keep => vfs.pin(ino).await,
                    Ok(ino) => vfs.unpin(ino).await,
                    Err(e) => Err(e),
                };
                pinned(&path, answer)
            }
            Request::SendNow => {
                self.vfs.send_now();
                Response::Done {
                    message: format!("{} queued, sent now", crate::control::report::files(self.vfs.queued_files() as u64)),
                }
            }
            Request::Free { path } => {
                let vfs = &self.vfs;
                let answer = match vfs.resolve(&path).await {
                    Ok(ino) => vfs.free(ino).await,
                    Err(e) => Err(e),
                };
                pinned(&path, answer)
            }
            Request::States { path } => {
                // From memory and the cache's index, never the server: off the async threads.
                let vfs = self.vfs.clone();
                let rel = path.clone();
                match tokio::task::spawn_blocking(move || vfs.states_in(&rel)).await {
                    Ok(Ok((state, entries))) => Response::States(FolderStates {
                        path,
                        state: state.to_string(),
                        entries: entries
                            .into_iter()
                            .map(|(name, s)| (name, s.to_string()))
                            .collect(),
                    }),
                    Ok(Err(crate::vfs::VfsError::NotFound)) => Response::error(format!(
                        "{path}: no such folder known to the mount (list it first)"
                    )),
                    Ok(Err(crate::vfs::VfsError::NotDir)) => {
                        Response::error(format!("{path}: not a folder"))
                    }
                    Ok(Err(e)) => Response::error(format!("{path}: {e}")),
                    Err(e) => Response::error(format!("the states could not be read: {e}")),
                }
            }
            Request::Bandwidth { upload, download } => {
                super::bandwidth::answer(upload, download)
            }
            other => Response::error(format!(
                "this is the daemon of a mount; {:?} is asked of the profile's daemon (cloudmount start PROFILE)",
                other.verb()
            )),
        }
    }
}

/// The answer to `pin` or `free`: what was done, or why not in words for the user.
fn pinned(path: &str, answer: crate::vfs::VfsResult<crate::vfs::pins::PinAnswer>) -> Response {
    use crate::vfs::VfsError;
    match answer {
        Ok(a) => Response::Pinned(a),
        Err(VfsError::NotFound) => Response::error(format!("{path}: no such file or folder")),
        Err(VfsError::NoSpace(why)) => Response::error(why),
        Err(VfsError::Remote(e)) if matches!(e, crate::remote::RemoteError::Transient { .. }) => {
            Response::error(format!(
                "{path}: the server does not answer ({}); a pin needs its listing once",
                crate::health::why_unreachable(&e)
            ))
        }
        Err(e) => Response::error(format!("{path}: {e}")),
    }
}
