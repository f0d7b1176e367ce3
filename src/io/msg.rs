//! [`IoMsg`], the message type of the io sources: the turns they schedule to themselves.

/// The message type of the io sources' stages. They send it to themselves (a turn of
/// reading, a poll after the end of a file); there is nothing for users to send.
#[derive(Debug)]
pub struct IoMsg(pub(crate) Msg);

#[derive(Debug)]
pub(crate) enum Msg {
    /// Read a batch, or look at the file again.
    Read,
}
