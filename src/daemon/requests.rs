//! The daemon's answers to control requests: the [`ControlHandler`] over the mounted [`Vfs`].
//! A new verb of [`Request`] gets its arm here; the transport ([`crate::control::server`])
//! stays as it is.

use std::sync::Arc;

use async_trait::async_trait;

use crate::control::{ControlHandler, Request, Response};
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
                    Ok(status) => Response::Status(Box::new(status)),
                    Err(e) => {
                        tracing::warn!(error = %e, "status snapshot failed");
                        Response::error(format!("the status could not be taken: {e}"))
                    }
                }
            }
            other => Response::error(format!(
                "this is the daemon of a mount; {:?} is asked of the profile's daemon (cloudmount start PROFILE)",
                other.verb()
            )),
        }
    }
}
