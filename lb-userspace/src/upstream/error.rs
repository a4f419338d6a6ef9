//! Why an upstream attempt failed, and what that allows (retry, ejection).
use std::{io, net::SocketAddr, time::Duration};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed (refused, unreachable): nothing was sent.
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// TCP or TLS connect took longer than `proxy-connect-timeout`: nothing was sent.
    #[error("connecting to {addr}: no answer within {after:?}")]
    ConnectTimeout { addr: SocketAddr, after: Duration },
    /// The TLS handshake with the backend failed.
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The HTTP handshake (h2 preface/settings) failed.
    #[error("HTTP handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The request could not be sent or the response head not read.
    #[error("exchange failed: {source}")]
    Exchange {
        #[source]
        source: hyper::Error,
    },
    /// No response head within `proxy-read-timeout`.
    #[error("no response within {after:?}")]
    ReadTimeout { after: Duration },
    /// A write of the request waited longer than `proxy-send-timeout` (the backend
    /// stopped reading).
    #[error("the backend took no request data for {after:?}")]
    SendTimeout { after: Duration },
}

impl UpstreamError {
    /// A failed exchange; [`Self::SendTimeout`] when the send timeout failed it.
    pub fn exchange(source: hyper::Error) -> Self {
        match super::send_timeout::find(&source) {
            Some(after) => Self::SendTimeout { after },
            None => Self::Exchange { source },
        }
    }

    /// The endpoint could not be reached at all (outlier ejection at once).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::ConnectTimeout { .. }
                | Self::Tls { .. }
                | Self::Handshake { .. }
        )
    }

    /// A timeout (`proxy-next-upstream timeout`), as opposed to an error.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::ConnectTimeout { .. } | Self::ReadTimeout { .. } | Self::SendTimeout { .. }
        )
    }

    /// Whether the request body was too large (the client's fault, not the backend's).
    pub fn body_too_large(&self) -> bool {
        let Self::Exchange { source } = self else {
            return false;
        };
        std::error::Error::source(source)
            .and_then(|e| e.downcast_ref::<super::BodyError>())
            .is_some_and(|e| matches!(e, super::BodyError::TooLarge { .. }))
    }
}
