//! Why a step failed.

use kms_lab_stack::StackError;

/// Why a step failed: the stack refused an operation, an expectation did not hold, or a wait ran out.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Starting, stopping or talking to a component failed.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// An expectation did not hold, or an action could not be carried out.
    #[error("{0}")]
    Failed(String),
    /// A `wait_until` condition did not hold in time.
    #[error("not within {seconds:.0} s: {what}; last seen: {last}")]
    Timeout {
        /// The deadline in seconds.
        seconds: f64,
        /// What was awaited.
        what: String,
        /// The last observation.
        last: String,
    },
}
