//! A UNet whose down, mid and up blocks stay in host memory (a memory-mapped checkpoint or host
//! tensors) and are materialised on the compute device only around the moment they run, so the
//! device holds the small trunk and a window of blocks instead of the whole UNet.
//!
//! The window: before block k runs, blocks k..k+N-1 (in run order, wrapping into the next
//! forward pass, which starts with the same first block) are made resident, loading the ones
//! missing; after it runs, block k is freed unless the window covers every block. N = 1 loads
//! each block just before it runs; N = 2 also prefetches the next one.
//!
//! The prefetch is a load ahead, not an overlapped copy: candle 0.11 has no host-to-device copy
//! on a side stream, so the load of block k+1 happens before block k runs, not during it.

use super::{BlockHandle, BlockId, BlockSource, UNetBlock, UNetInputs, UNetModel, UNetTrunk};
use crate::config::UNetConfig;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct StreamedUNet {
    pub trunk: UNetTrunk,
    /// The UNet's root builder over host-held weights, targeting the compute device: asking it
    /// for a tensor copies that tensor to the device.
    host: VarBuilder<'static>,
    order: Vec<BlockId>,
    resident_blocks: usize,
    /// The blocks on the device now, in load order.
    window: Mutex<Vec<(BlockId, Arc<UNetBlock>)>>,
    /// Block loads so far (tests and logs: how much streaming a run did).
    loads: AtomicUsize,
}

impl StreamedUNet {
    /// The trunk is loaded now; the blocks when they run. `host` must read the weights from
    /// host memory (a memory-mapped checkpoint, or tensors on the CPU) and target the compute
    /// device.
    pub fn new(
        config: &UNetConfig,
        host: VarBuilder<'static>,
        resident_blocks: usize,
    ) -> Result<Self> {
        Ok(Self {
            trunk: UNetTrunk::new(config, &host)?,
            order: BlockId::all(config),
            host,
            resident_blocks: resident_blocks.max(1),
            window: Mutex::new(Vec::new()),
            loads: AtomicUsize::new(0),
        })
    }

    /// The blocks on the device now.
    pub fn resident(&self) -> Vec<BlockId> {
        self.lock_window().iter().map(|(id, _)| *id).collect()
    }

    /// How many block loads the streamer has made.
    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::Relaxed)
    }

    fn lock_window(&self) -> std::sync::MutexGuard<'_, Vec<(BlockId, Arc<UNetBlock>)>> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The blocks that must be resident while `id` runs: it and the next N-1 in run order.
    fn window_of(&self, id: BlockId) -> Result<Vec<BlockId>> {
        let Some(k) = self.order.iter().position(|b| *b == id) else {
            candle_core::bail!("the UNet has no block {id:?}");
        };
        let n = self.order.len();
        Ok((0..self.resident_blocks.min(n))
            .map(|j| self.order[(k + j) % n])
            .collect())
    }
}

impl BlockSource for StreamedUNet {
    fn block(&self, id: BlockId) -> Result<BlockHandle<'_>> {
        let wanted = self.window_of(id)?;
        let mut window = self.lock_window();
        // Blocks outside the window (left over from a pass that failed) go before any load.
        window.retain(|(b, _)| wanted.contains(b));
        for b in &wanted {
            if !window.iter().any(|(have, _)| have == b) {
                let block = UNetBlock::new(&self.trunk.config, *b, &self.host)?;
                window.push((*b, Arc::new(block)));
                self.loads.fetch_add(1, Ordering::Relaxed);
            }
        }
        // `wanted` starts with `id`, so the window holds it now
        let block = window
            .iter()
            .find(|(b, _)| *b == id)
            .map(|(_, block)| block.clone())
            .ok_or_else(|| candle_core::Error::Msg(format!("block {id:?} was not loaded")))?;
        Ok(BlockHandle::Shared(block))
    }

    fn done(&self, id: BlockId) -> Result<()> {
        // With a window as long as the UNet every block stays: nothing is streamed.
        if self.resident_blocks < self.order.len() {
            self.lock_window().retain(|(b, _)| *b != id);
        }
        Ok(())
    }
}

impl UNetModel for StreamedUNet {
    fn forward(&self, inputs: &UNetInputs) -> Result<Tensor> {
        self.trunk.forward_with(inputs, self)
    }
}

/// Elements of the trunk's weights and of each block's (in run order), from the UNet's tensor
/// list: what the estimator needs to size a streaming window.
pub fn block_weight_elements(
    spec: &[crate::weights::TensorSpec],
    config: &UNetConfig,
) -> (usize, Vec<usize>) {
    let order = BlockId::all(config);
    let prefixes: Vec<String> = order.iter().map(|b| b.prefix()).collect();
    let mut blocks = vec![0; order.len()];
    let mut trunk = 0;
    for t in spec {
        match prefixes.iter().position(|p| t.name.starts_with(p.as_str())) {
            Some(i) => blocks[i] += t.numel(),
            None => trunk += t.numel(),
        }
    }
    (trunk, blocks)
}
