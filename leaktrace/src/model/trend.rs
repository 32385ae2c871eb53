//! Growth of one stack over the trace (computed by `crate::trend`).

use serde::{Deserialize, Serialize};

/// Fewest completed intervals before a stack is classified.
pub const MIN_INTERVALS: usize = 4;

/// One point of a stack's series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since tracing began.
    pub t_s: f64,
    /// Outstanding bytes.
    pub bytes: u64,
    /// Outstanding allocations.
    pub count: u64,
    /// Bytes allocated since tracing began (null when not counted, as in kernel mode).
    pub allocated_bytes: Option<u64>,
    /// Bytes freed since tracing began (null when not counted).
    pub freed_bytes: Option<u64>,
}

/// The verdict on one stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Keeps rising.
    Growing,
    /// Rose, then stayed bounded.
    Plateau,
    /// Allocated and freed at a high rate, outstanding stable.
    Churn,
    /// Too few intervals to say.
    Unclear,
}

impl Class {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Class::Growing => "growing",
            Class::Plateau => "plateau",
            Class::Churn => "churn",
            Class::Unclear => "unclear",
        }
    }
}

/// Growth of one stack over the trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// The verdict.
    pub class: Class,
    /// Recent growth rate: least-squares slope of outstanding bytes over the recent half of
    /// the series, per minute.
    pub bytes_per_min: f64,
    /// Goodness of that fit (1 = a straight line), a confidence measure for the rate.
    pub r_squared: f64,
    /// Intervals in which outstanding bytes rose.
    pub intervals_grown: usize,
    /// Completed intervals.
    pub intervals: usize,
    /// Bytes allocated per minute over the whole trace, when counted.
    pub allocated_per_min: Option<f64>,
    /// The samples the verdict is based on.
    pub series: Vec<Sample>,
}
