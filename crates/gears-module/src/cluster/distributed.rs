//! The initiator's side of a distributed execution: a batch run, or an event's execution of a
//! registration whose plan moves records.

use std::sync::Arc;

use gears_core::ExecutionPlan;

use super::bus::{self, ExecutionKey, Message};
use super::exchange::{self, ClusterExchange};
use super::{encode_calls, topology};
use crate::host::{RedisHost, TopLevelCall};

/// The initiator's side: sends every other shard its part (the script, the recorded replies),
/// and gives the exchange its executor runs through. `finish` must be called after the run.
pub(crate) struct Distributed {
    pub exchange: Arc<ClusterExchange>,
}

impl Distributed {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        topology: &topology::Topology,
        execution_id: &str,
        language: gears_core::Language,
        script: &str,
        user: &[u8],
        db: i32,
        calls: Vec<TopLevelCall>,
        plan: &ExecutionPlan,
        host: &Arc<RedisHost>,
        requirements: Vec<Vec<u8>>,
    ) -> Result<Self, String> {
        Self::launch(topology, execution_id, plan, host, |key, shards, slots| {
            Message::Run {
                key,
                language,
                script: script.to_string(),
                user: user.to_vec(),
                db,
                calls: encode_calls(&calls),
                shards,
                slots,
                requirements,
                plan_digest: super::plan_digest(plan),
            }
        })
    }

    /// The initiator's side of an event's execution of a registration whose plan moves
    /// records ([`moves_records`]): every other shard runs its part of the registration.
    pub fn start_registration(
        topology: &topology::Topology,
        execution_id: &str,
        registration: &str,
        (user, db): (&[u8], i32),
        plan: &ExecutionPlan,
        host: &Arc<RedisHost>,
    ) -> Result<Self, String> {
        Self::launch(topology, execution_id, plan, host, |key, shards, slots| {
            Message::RunRegistration {
                key,
                registration: registration.to_string(),
                user: user.to_vec(),
                db,
                shards,
                slots,
                plan_digest: super::plan_digest(plan),
            }
        })
    }

    fn launch(
        topology: &topology::Topology,
        execution_id: &str,
        plan: &ExecutionPlan,
        host: &Arc<RedisHost>,
        message: impl FnOnce(ExecutionKey, Vec<String>, Vec<(u16, u16, String)>) -> Message,
    ) -> Result<Self, String> {
        let key = ExecutionKey {
            initiator: topology.my_id.clone(),
            id: execution_id.to_string(),
        };
        let shards: Vec<String> = topology.shards.iter().map(|s| s.id.clone()).collect();
        let slots: Vec<(u16, u16, String)> = topology
            .shards
            .iter()
            .flat_map(|s| s.ranges.iter().map(move |(a, b)| (*a, *b, s.id.clone())))
            .collect();
        let exchange = ClusterExchange::new(
            key.clone(),
            &topology.my_id,
            (shards.clone(), slots.clone()),
            host.clone(),
            plan,
        );
        let message = message(key, shards.clone(), slots);
        let bytes = message.encode();
        let refused: Vec<String> = host.with_lock(|_| {
            shards
                .iter()
                .filter(|id| **id != topology.my_id)
                .filter(|id| !bus::send_bytes(id, &bytes))
                .cloned()
                .collect()
        });
        if !refused.is_empty() {
            exchange::forget(&exchange.key);
            return Err(format!(
                "ERR could not reach shard {} (cluster bus)",
                refused.join(", ")
            ));
        }
        Ok(Distributed { exchange })
    }

    /// Waits for every other shard's part to end; their errors, and whether the execution was
    /// aborted (a shard did not answer or could not run its part: the results are not whole;
    /// then the error is why, alone). Aborts the others then.
    pub fn finish(self) -> (Vec<String>, bool) {
        let others: Vec<String> = self
            .exchange
            .shards
            .iter()
            .filter(|s| **s != self.exchange.me)
            .cloned()
            .collect();
        let errors = match self
            .exchange
            .mailbox
            .wait_finished(&others, self.exchange.idle)
        {
            Ok(errors) => errors,
            Err(e) => {
                let reason = self
                    .exchange
                    .mailbox
                    .aborted()
                    .unwrap_or_else(|| e.to_string());
                let key = self.exchange.key.clone();
                self.exchange.host.with_lock(|ctx| {
                    for shard in &others {
                        bus::send(
                            ctx,
                            shard,
                            &Message::Abort {
                                key: key.clone(),
                                reason: reason.clone(),
                            },
                        );
                    }
                });
                // Once: a wait of the run may have listed it already.
                vec![reason]
            }
        };
        let aborted = self.exchange.mailbox.aborted();
        exchange::forget(&self.exchange.key);
        match aborted {
            // Why it was aborted, alone: the other shards' errors are not an answer.
            Some(reason) => (vec![reason], true),
            None => (errors, false),
        }
    }
}
