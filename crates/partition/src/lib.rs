//! Choosing what to offload: CloneCloud's optimizer over a profile ([`optimize`]) and the
//! partition database that keeps profiles and partitions ([`store`]).

pub mod optimize;
pub mod store;

pub use optimize::{Choice, Energy, Files, Network, Objective, PowerModel, Problem, Resources, RunMeasure, problem, solve};
pub use store::{Partition, Store, StoredProfile};
