//! `Chain`: models run one after another on each frame (model `i + 1` reads model `i`'s output
//! in place), timing each model and the whole pass into preallocated sample buffers.

use crate::stats::Samples;
use crate::AudioError;
use kiln_models::rtnet::RtNet;
use std::time::Instant;

/// A named model of a chain.
pub struct Stage {
    pub name: String,
    pub net: RtNet,
    pub latency: Samples,
}

/// Models chained frame by frame.
pub struct Chain {
    stages: Vec<Stage>,
    pipeline: Samples,
}

impl Chain {
    /// Checks that each model's input size is the previous model's output size; `capacity` is
    /// how many latency samples are kept per model.
    pub fn new(models: Vec<(String, RtNet)>, capacity: usize) -> Result<Chain, AudioError> {
        if models.is_empty() {
            return Err(AudioError::Empty);
        }
        for i in 1..models.len() {
            let (got, expected) = (models[i - 1].1.out_size(), models[i].1.in_size());
            if got != expected {
                return Err(AudioError::ChainMismatch {
                    index: i,
                    name: models[i].0.clone(),
                    prev: i - 1,
                    expected,
                    got,
                });
            }
        }
        Ok(Chain {
            stages: models
                .into_iter()
                .map(|(name, net)| Stage {
                    name,
                    net,
                    latency: Samples::with_capacity(capacity),
                })
                .collect(),
            pipeline: Samples::with_capacity(capacity),
        })
    }

    pub fn in_size(&self) -> usize {
        self.stages.first().map_or(0, |s| s.net.in_size())
    }

    pub fn out_size(&self) -> usize {
        self.stages.last().map_or(0, |s| s.net.out_size())
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Latency samples of whole passes.
    pub fn pipeline_latency(&self) -> &Samples {
        &self.pipeline
    }

    /// Heap bytes of every model (weights, state, scratch, frame buffers).
    pub fn memory_bytes(&self) -> usize {
        self.stages.iter().map(|s| s.net.memory_bytes()).sum()
    }

    pub fn reset(&mut self) {
        self.stages.iter_mut().for_each(|s| s.net.reset());
    }

    /// Clears the latency samples (e.g. after a warm-up).
    pub fn clear_stats(&mut self) {
        self.stages.iter_mut().for_each(|s| s.latency.clear());
        self.pipeline.clear();
    }

    /// Runs one frame (`x.len() == in_size()`, checked by the caller) through every model,
    /// recording latencies; returns the last model's output. Never allocates.
    pub fn run(&mut self, x: &[f32]) -> &[f32] {
        let start = Instant::now();
        let mut prev = start;
        for i in 0..self.stages.len() {
            let (done, rest) = self.stages.split_at_mut(i);
            let stage = &mut rest[0];
            match done.last() {
                None => stage.net.forward(x),
                Some(p) => stage.net.forward(p.net.output()),
            };
            let now = Instant::now();
            stage.latency.record((now - prev).as_nanos() as u64);
            prev = now;
        }
        self.pipeline.record((prev - start).as_nanos() as u64);
        self.output()
    }

    /// The last model's latest output.
    pub fn output(&self) -> &[f32] {
        self.stages.last().map_or(&[], |s| s.net.output())
    }
}
