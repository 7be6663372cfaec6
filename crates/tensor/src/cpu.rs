//! Run-time CPU feature detection and the process-wide kernel choice (`KILN_KERNELS`).

use std::sync::OnceLock;

/// Instruction-set extensions the SIMD kernels care about, detected once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuFeatures {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vl: bool,
    pub avx512vnni: bool,
}

/// Which family of kernels the dispatcher uses. `Generic` is the scalar reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KernelChoice {
    Generic,
    Avx2,
    Avx512,
    Avx512Vnni,
}

impl KernelChoice {
    pub fn name(self) -> &'static str {
        match self {
            KernelChoice::Generic => "generic",
            KernelChoice::Avx2 => "avx2",
            KernelChoice::Avx512 => "avx512",
            KernelChoice::Avx512Vnni => "avx512vnni",
        }
    }
}

impl CpuFeatures {
    /// Detects what the running CPU supports, ignoring `KILN_KERNELS`.
    pub fn detect() -> CpuFeatures {
        #[cfg(target_arch = "x86_64")]
        {
            CpuFeatures {
                avx2: std::arch::is_x86_feature_detected!("avx2"),
                fma: std::arch::is_x86_feature_detected!("fma"),
                f16c: std::arch::is_x86_feature_detected!("f16c"),
                avx512f: std::arch::is_x86_feature_detected!("avx512f"),
                avx512bw: std::arch::is_x86_feature_detected!("avx512bw"),
                avx512vl: std::arch::is_x86_feature_detected!("avx512vl"),
                avx512vnni: std::arch::is_x86_feature_detected!("avx512vnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            CpuFeatures::default()
        }
    }

    /// Whether this CPU can run kernel family `choice` (no allocation: kernels check it on
    /// every call).
    pub fn supports(&self, choice: KernelChoice) -> bool {
        let avx2 = self.avx2 && self.fma && self.f16c;
        let avx512 = avx2 && self.avx512f && self.avx512bw && self.avx512vl;
        match choice {
            KernelChoice::Generic => true,
            KernelChoice::Avx2 => avx2,
            KernelChoice::Avx512 => avx512,
            KernelChoice::Avx512Vnni => avx512 && self.avx512vnni,
        }
    }

    /// Every kernel family this CPU can run, generic first. Tests iterate over this list.
    pub fn supported_choices(&self) -> Vec<KernelChoice> {
        [
            KernelChoice::Generic,
            KernelChoice::Avx2,
            KernelChoice::Avx512,
            KernelChoice::Avx512Vnni,
        ]
        .into_iter()
        .filter(|&c| self.supports(c))
        .collect()
    }

    /// The best family this CPU supports.
    pub fn best_choice(&self) -> KernelChoice {
        *self
            .supported_choices()
            .last()
            .unwrap_or(&KernelChoice::Generic)
    }
}

/// Detected features (cached).
pub fn features() -> &'static CpuFeatures {
    static F: OnceLock<CpuFeatures> = OnceLock::new();
    F.get_or_init(CpuFeatures::detect)
}

/// The kernel family used by dispatching entry points: the best the CPU supports, or the
/// scalar reference when `KILN_KERNELS=generic` is set (also `avx2` / `avx512` to cap it).
pub fn kernel_choice() -> KernelChoice {
    static K: OnceLock<KernelChoice> = OnceLock::new();
    *K.get_or_init(|| {
        let best = features().best_choice();
        match std::env::var("KILN_KERNELS").ok().as_deref() {
            Some("generic") => KernelChoice::Generic,
            Some("avx2") => best.min(KernelChoice::Avx2),
            Some("avx512") => best.min(KernelChoice::Avx512),
            _ => best,
        }
    })
}

/// Code generic over its job, which [`Compiled`] builds once per vector unit: everything `run`
/// inlines (it should be `#[inline(always)]` throughout) is compiled for that unit.
pub trait InlineJob {
    type Arg;
    fn run(&mut self, arg: &Self::Arg);
}

/// A job's copy compiled for the kernel family [`kernel_choice`] picks (the widest vector
/// unit of this CPU unless `KILN_KERNELS` says otherwise), chosen once. For code whose sizes
/// are compile-time constants (the fixed-size real-time layers), so that one call runs a
/// whole net with no dispatch inside.
pub struct Compiled<J: InlineJob>(unsafe fn(&mut J, &J::Arg));

impl<J: InlineJob> Compiled<J> {
    pub fn for_this_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        match kernel_choice() {
            KernelChoice::Avx512 | KernelChoice::Avx512Vnni => return Compiled(run_avx512::<J>),
            KernelChoice::Avx2 => return Compiled(run_avx2::<J>),
            KernelChoice::Generic => {}
        }
        Compiled(run_plain::<J>)
    }

    #[inline(always)]
    pub fn run(&self, job: &mut J, arg: &J::Arg) {
        // SAFETY: `for_this_cpu` chose a copy whose features this CPU has.
        unsafe { (self.0)(job, arg) }
    }
}

/// # Safety
/// Needs AVX-512 F/VL, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn run_avx512<J: InlineJob>(job: &mut J, arg: &J::Arg) {
    job.run(arg)
}

/// # Safety
/// Needs AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<J: InlineJob>(job: &mut J, arg: &J::Arg) {
    job.run(arg)
}

/// # Safety
/// None: baseline instructions (`unsafe` only to share the pointer type).
unsafe fn run_plain<J: InlineJob>(job: &mut J, arg: &J::Arg) {
    job.run(arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_always_supported_and_best_is_last() {
        let f = features();
        let c = f.supported_choices();
        assert_eq!(c[0], KernelChoice::Generic);
        assert_eq!(f.best_choice(), *c.last().unwrap());
        assert!(c.contains(&kernel_choice()));
    }
}
