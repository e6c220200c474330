//! How big a run is ([`Plan`]): the full sizes behind the published figures, or the `--quick`
//! ones for a smoke run. The plan is part of the results, so every figure comes with its sizes.

use serde::Serialize;

/// Sizes of one run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Plan {
    pub(crate) ack_rates: Vec<f64>,
    pub(crate) ack_phase_secs: u64,
    /// Slipway/baseline pairs per fixed rate, interleaved (the order alternates each round).
    pub(crate) ack_rounds: usize,
    /// Rounds of the three provisioning bursts (Slipway, same protocol, bare), the order
    /// alternating each round.
    pub(crate) saga_rounds: usize,
    pub(crate) saturation_concurrency: usize,
    pub(crate) sagas: usize,
    pub(crate) agents: usize,
    pub(crate) command_samples: usize,
    pub(crate) command_rate: f64,
    pub(crate) history_commands: usize,
    pub(crate) sticky_cache: usize,
    pub(crate) history_limit: u32,
    /// Agents provisioned while an app follows each one's event stream.
    pub(crate) event_agents: usize,
}

impl Plan {
    pub(crate) fn full() -> Self {
        Self {
            ack_rates: vec![50.0, 100.0, 200.0],
            ack_phase_secs: 5,
            ack_rounds: 3,
            saga_rounds: 3,
            saturation_concurrency: 64,
            sagas: 200,
            agents: 10_000,
            command_samples: 300,
            command_rate: 20.0,
            history_commands: 5_000,
            sticky_cache: 1000,
            history_limit: 5_000,
            event_agents: 40,
        }
    }

    /// A few seconds of load on every phase, for CI: proves the pipeline runs end to end (every
    /// phase answered, nothing failed); its figures are not comparable with anything.
    pub(crate) fn smoke() -> Self {
        Self {
            ack_rates: vec![20.0],
            ack_phase_secs: 1,
            ack_rounds: 2,
            saga_rounds: 1,
            saturation_concurrency: 4,
            sagas: 5,
            agents: 40,
            command_samples: 10,
            command_rate: 20.0,
            history_commands: 40,
            sticky_cache: 1000,
            history_limit: 5_000,
            event_agents: 2,
        }
    }

    pub(crate) fn quick() -> Self {
        Self {
            ack_rates: vec![50.0, 100.0, 200.0],
            ack_phase_secs: 3,
            ack_rounds: 3,
            saga_rounds: 1,
            saturation_concurrency: 32,
            sagas: 30,
            agents: 1_500,
            command_samples: 60,
            command_rate: 20.0,
            history_commands: 1_200,
            sticky_cache: 1000,
            history_limit: 5_000,
            event_agents: 10,
        }
    }
}
