//! `collect` and `repartition`: steps that move records between shards. On a single node every
//! record is already where it must be, so the operator passes records through; the cluster
//! transport replaces it through [`crate::RecordExchange`].

use super::{Operator, StepContext};
use crate::record::Record;

pub struct Exchange;

impl Operator for Exchange {
    fn process(&mut self, input: Vec<Record>, _ctx: &mut StepContext<'_>) -> Vec<Record> {
        input
    }
}
