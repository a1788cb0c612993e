//! What a finished execution replies.

use std::sync::Arc;

use gears_core::ReplyValue;

use crate::host::BlockedReply;

/// What a finished execution replies, kept once (an execution can hold a large reply).
pub(crate) struct Finished {
    /// `RG.GETRESULTS`: `[[results], [errors]]`.
    pub(super) results: Arc<ReplyValue>,
    /// What the client of a blocking `RG.*EXECUTE` gets.
    direct: Direct,
}

enum Direct {
    /// The results.
    Results,
    /// `OK`: the script did not call `run()`.
    Ok,
    /// The error of a script that failed at its top level (or a reply too large).
    Error(String),
}

impl Finished {
    /// An execution that ran: `[[results], [errors]]`, also for its blocked client.
    pub fn ran(reply: ReplyValue) -> Self {
        Finished {
            results: Arc::new(reply),
            direct: Direct::Results,
        }
    }

    /// A script that did not call `run()`.
    pub fn no_run() -> Self {
        Finished {
            results: Arc::new(results_and_errors(Vec::new())),
            direct: Direct::Ok,
        }
    }

    /// A script that failed before its execution ran: its blocked client gets the error.
    pub fn failed(error: String) -> Self {
        Finished {
            results: Arc::new(results_and_errors(vec![error.clone()])),
            direct: Direct::Error(error),
        }
    }

    /// An execution stopped before it ran (aborted in the queue).
    pub(super) fn stopped(reason: &str) -> Self {
        Self::ran(results_and_errors(vec![reason.to_string()]))
    }

    pub fn is_error(&self) -> bool {
        matches!(self.direct, Direct::Error(_))
    }

    pub(super) fn parts(&self) -> (&[ReplyValue], &[ReplyValue]) {
        match &*self.results {
            ReplyValue::Array(parts) => match parts.as_slice() {
                [ReplyValue::Array(results), ReplyValue::Array(errors)] => (results, errors),
                _ => (&[], &[]),
            },
            _ => (&[], &[]),
        }
    }

    pub fn result_count(&self) -> usize {
        self.parts().0.len()
    }

    pub fn error_count(&self) -> usize {
        self.parts().1.len()
    }

    /// The error texts.
    pub fn errors(&self) -> Vec<String> {
        self.parts()
            .1
            .iter()
            .map(|error| match error {
                ReplyValue::Bulk(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                ReplyValue::Error(text) | ReplyValue::Status(text) => text.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// Sends the blocked `RG.*EXECUTE` client its reply.
    pub(super) fn reply_direct(&self, client: BlockedReply) {
        match &self.direct {
            Direct::Results => client.reply(&self.results),
            Direct::Ok => client.reply(&ReplyValue::Status("OK".into())),
            Direct::Error(error) => client.reply(&ReplyValue::Error(error.clone())),
        }
    }
}

/// `[[], [errors]]`.
fn results_and_errors(errors: Vec<String>) -> ReplyValue {
    ReplyValue::Array(vec![
        ReplyValue::Array(Vec::new()),
        ReplyValue::Array(
            errors
                .into_iter()
                .map(|e| ReplyValue::Bulk(e.into_bytes()))
                .collect(),
        ),
    ])
}
