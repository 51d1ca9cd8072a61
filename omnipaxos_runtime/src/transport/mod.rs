//! TCP between peers: framing ([`frame`]), one outgoing link per peer (a byte-bounded queue
//! and a writer task that reconnects with backoff), a listener with one reader task per
//! incoming connection, and a [`filter::LinkFilter`] for fault injection in tests.

pub mod filter;
pub mod frame;
pub(crate) mod inbound;
pub(crate) mod link;
