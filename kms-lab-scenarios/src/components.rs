//! Components a family of steps brings beside the stack — today the secret sync controller
//! (`steps/sync.rs`). Each is declared once, by one type implementing [`StackComponent`] in its
//! family's module and one line in the `components!` list below: where its spec sits under
//! `stack:`, what it needs of the rest of the stack, which mock KMS dialects it calls, what is
//! prepared before the stack starts (a build, a turn), how it starts on the running stack and
//! stops. The runner, the world and the load-time checks know none of them by name.

use std::future::Future;

use kms_lab_stack::Stack;
use kms_lab_stack::mockkms::MockKmsOptions;

use crate::error::StepError;
use crate::model::StackSpec;
use crate::runner::RunOptions;
use crate::steps::sync;

/// A component a family of steps runs beside the stack.
pub trait StackComponent: Sized + Send + Sync + 'static {
    /// Its spec under `stack:`.
    type Spec: Send + Sync;
    /// What is prepared before the stack starts.
    type Prepared: Send;
    /// What it is, in messages (`the secret sync controller`).
    const NAME: &'static str;
    /// How a scenario adds it: the line under `stack:` (`secret_sync: {polling_interval: 2s}`).
    const HOW_TO_ADD: &'static str;
    /// Its spec in `stack`, if the scenario runs it.
    fn spec(stack: &StackSpec) -> Option<&Self::Spec>;
    /// Load-time checks of its spec against the rest of the stack; the error says the fix.
    fn check(spec: &Self::Spec, stack: &StackSpec) -> Result<(), String>;
    /// The variant that runs, for reports (`ack-secret-manager`).
    fn describe(spec: &Self::Spec, options: &RunOptions) -> String;
    /// The mock KMS dialects it calls, served by every node.
    fn dialects(spec: &Self::Spec, options: &RunOptions) -> Vec<mock_kms::dialects::Dialect>;
    /// Prepares it before the stack starts (the error says why it cannot run).
    fn prepare<'a>(
        spec: &'a Self::Spec,
        options: &'a RunOptions,
        progress: &'a dyn Fn(&str),
    ) -> impl Future<Output = Result<Self::Prepared, String>> + 'a;
    /// Starts it on the running stack; also its progress line.
    fn start<'a>(
        stack: &'a Stack,
        spec: &'a Self::Spec,
        seed: u64,
        prepared: Self::Prepared,
        progress: &'a dyn Fn(&str),
    ) -> impl Future<Output = Result<(Self, String), StepError>> + 'a;
    /// Stops it (before the stack goes down).
    fn stop(self) -> impl Future<Output = ()> + Send;
}

/// Declares the components: the running set in the [`crate::world::World`], what is prepared
/// for them, and the runner's and the loader's calls over all of them.
macro_rules! components {
    ($( $(#[$doc:meta])* $field:ident: $ty:ty, )*) => {
        /// The running components of a scenario (each `None` unless its stack runs it).
        #[derive(Debug, Default)]
        pub struct Running {
            $( $(#[$doc])* pub $field: Option<$ty>, )*
        }

        /// What was prepared for each component the scenario runs.
        #[derive(Default)]
        pub struct Prepared {
            $( $field: Option<<$ty as StackComponent>::Prepared>, )*
        }

        /// Load-time checks of every component the stack declares.
        pub fn check(stack: &StackSpec) -> Result<(), String> {
            $( if let Some(spec) = <$ty as StackComponent>::spec(stack) {
                <$ty as StackComponent>::check(spec, stack)?;
            } )*
            Ok(())
        }

        /// Which variant of each component runs, for the report (key under `stack:` → variant).
        pub fn describe(stack: &StackSpec, options: &RunOptions) -> std::collections::BTreeMap<String, String> {
            let mut out = std::collections::BTreeMap::new();
            $( if let Some(spec) = <$ty as StackComponent>::spec(stack) {
                out.insert(stringify!($field).to_owned(), <$ty as StackComponent>::describe(spec, options));
            } )*
            out
        }

        /// Makes the mock KMS serve the dialects the components call.
        pub fn serve_dialects(stack: &StackSpec, options: &RunOptions, kms: &mut MockKmsOptions) {
            $( if let Some(spec) = <$ty as StackComponent>::spec(stack) {
                for dialect in <$ty as StackComponent>::dialects(spec, options) {
                    kms.serve_dialect(dialect);
                }
            } )*
        }

        /// Prepares every component the stack declares, before it starts.
        pub async fn prepare(stack: &StackSpec, options: &RunOptions, progress: &dyn Fn(&str)) -> Result<Prepared, String> {
            let mut prepared = Prepared::default();
            $( if let Some(spec) = <$ty as StackComponent>::spec(stack) {
                prepared.$field = Some(<$ty as StackComponent>::prepare(spec, options, progress).await?);
            } )*
            Ok(prepared)
        }

        /// Starts every prepared component on the running stack, one progress line each.
        pub async fn start(
            stack_spec: &StackSpec,
            stack: &Stack,
            seed: u64,
            prepared: Prepared,
            progress: &dyn Fn(&str),
        ) -> Result<Running, String> {
            let mut running = Running::default();
            $( if let (Some(spec), Some(ready)) = (<$ty as StackComponent>::spec(stack_spec), prepared.$field) {
                match <$ty as StackComponent>::start(stack, spec, seed, ready, progress).await {
                    Ok((component, line)) => {
                        progress(&format!("  {line}"));
                        running.$field = Some(component);
                    }
                    Err(error) => {
                        // What started before it is stopped, not left behind.
                        running.stop().await;
                        return Err(format!("{} did not start: {error}", <$ty as StackComponent>::NAME));
                    }
                }
            } )*
            Ok(running)
        }

        impl Running {
            /// Stops every running component.
            pub async fn stop(&mut self) {
                $( if let Some(component) = self.$field.take() {
                    <$ty as StackComponent>::stop(component).await;
                } )*
            }
        }
    };
}

components! {
    /// The secret sync controller (`secret_sync:`).
    secret_sync: sync::SecretSyncLab,
}
