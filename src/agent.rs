//! Agents: actors that hold one piece of state, like Elixir's Agent.
//!
//! Owns the state `S` and runs, one at a time and in arrival order, the closures sent to
//! read or change it (`get`, `update`, `get_and_update`, `cast`). A closure that panics
//! is reported to its caller and the agent carries on with the state as it was left.
//! Must not block: a closure runs on the agent's thread, between other callers'.

use std::fmt;

use actix::{Actor, Addr, ArbiterHandle, Context, Handler, Message, MessageResult, WeakAddr};

use crate::panic::catch_panic;

/// A handle to an agent. Cheap to clone; the agent lives while a handle does.
pub struct Agent<S: Unpin + 'static> {
    addr: Addr<AgentActor<S>>,
}

impl<S: Unpin + 'static> Clone for Agent<S> {
    fn clone(&self) -> Self {
        Agent {
            addr: self.addr.clone(),
        }
    }
}

/// A handle that does not keep its agent alive: for a state that reaches its own agent
/// (to schedule work on itself later), which a strong [`Agent`] would keep alive forever.
pub struct WeakAgent<S: Unpin + 'static> {
    addr: WeakAddr<AgentActor<S>>,
}

impl<S: Unpin + 'static> Clone for WeakAgent<S> {
    fn clone(&self) -> Self {
        WeakAgent {
            addr: self.addr.clone(),
        }
    }
}

impl<S: Unpin + 'static> WeakAgent<S> {
    /// The agent, unless every strong handle is gone.
    pub fn upgrade(&self) -> Option<Agent<S>> {
        self.addr.upgrade().map(|addr| Agent { addr })
    }

    /// As [`Agent::cast`]; `false` (and `f` dropped) if the agent is gone.
    pub fn cast(&self, f: impl FnOnce(&mut S) + Send + 'static) -> bool {
        self.upgrade().map(|agent| agent.cast(f)).is_some()
    }
}

/// Why a call to an agent did not return a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("the agent has stopped")]
    Stopped,
    #[error("the agent's closure panicked: {0}")]
    Panicked(String),
}

impl<S: Unpin + 'static> Agent<S> {
    /// Starts an agent on the current thread's arbiter.
    pub fn start(state: S) -> Self {
        Agent {
            addr: AgentActor { state }.start(),
        }
    }

    /// Starts an agent on `arbiter` (another thread), with the state made there.
    pub fn start_in(arbiter: &ArbiterHandle, init: impl FnOnce() -> S + Send + 'static) -> Self {
        Agent {
            addr: AgentActor::start_in_arbiter(arbiter, move |_| AgentActor { state: init() }),
        }
    }

    /// Runs `f` on the state and returns what it returns.
    pub async fn get_and_update<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<R, AgentError> {
        self.addr
            .send(Call(Box::new(f)))
            .await
            .map_err(|_| AgentError::Stopped)?
    }

    /// Reads from the state.
    pub async fn get<R: Send + 'static>(
        &self,
        f: impl FnOnce(&S) -> R + Send + 'static,
    ) -> Result<R, AgentError> {
        self.get_and_update(move |state| f(state)).await
    }

    /// Changes the state and waits until it is done.
    pub async fn update(&self, f: impl FnOnce(&mut S) + Send + 'static) -> Result<(), AgentError> {
        self.get_and_update(f).await
    }

    /// Changes the state without waiting.
    pub fn cast(&self, f: impl FnOnce(&mut S) + Send + 'static) {
        self.addr.do_send(Call(Box::new(f)));
    }

    /// A handle that does not keep this agent alive.
    pub fn downgrade(&self) -> WeakAgent<S> {
        WeakAgent {
            addr: self.addr.downgrade(),
        }
    }
}

impl<S: Unpin + 'static> fmt::Debug for Agent<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Agent")
    }
}

struct AgentActor<S> {
    state: S,
}

impl<S: Unpin + 'static> Actor for AgentActor<S> {
    type Context = Context<Self>;
}

type Closure<S, R> = Box<dyn FnOnce(&mut S) -> R + Send>;

struct Call<S, R>(Closure<S, R>);

impl<S: 'static, R: Send + 'static> Message for Call<S, R> {
    type Result = Result<R, AgentError>;
}

impl<S: Unpin + 'static, R: Send + 'static> Handler<Call<S, R>> for AgentActor<S> {
    type Result = MessageResult<Call<S, R>>;

    fn handle(&mut self, Call(f): Call<S, R>, _ctx: &mut Context<Self>) -> Self::Result {
        let state = &mut self.state;
        MessageResult(catch_panic(move || f(state)).map_err(|message| {
            log::error!("agent closure panicked: {message}");
            AgentError::Panicked(message)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn get_update_and_order() {
        let agent = Agent::start(Vec::<u32>::new());
        agent.cast(|v| v.push(1));
        agent.update(|v| v.push(2)).await.unwrap();
        let len = agent.get_and_update(|v| {
            v.push(3);
            v.len()
        });
        assert_eq!(len.await, Ok(3));
        assert_eq!(agent.get(|v| v.clone()).await, Ok(vec![1, 2, 3]));
    }

    #[actix::test]
    async fn a_panicking_closure_leaves_the_agent_running() {
        let agent = Agent::start(0u32);
        let outcome = agent.get_and_update(|_| -> u32 { panic!("boom") }).await;
        assert_eq!(outcome, Err(AgentError::Panicked("boom".into())));
        assert_eq!(agent.update(|n| *n += 1).await, Ok(()));
        assert_eq!(agent.get(|n| *n).await, Ok(1));
    }

    #[actix::test]
    async fn a_weak_handle_in_the_state_does_not_keep_the_agent_alive() {
        struct State {
            me: Option<WeakAgent<State>>,
            dropped: std::sync::mpsc::Sender<()>,
        }
        impl Drop for State {
            fn drop(&mut self) {
                let _ = self.dropped.send(());
            }
        }
        let (dropped, was_dropped) = std::sync::mpsc::channel();
        let agent = Agent::start(State { me: None, dropped });
        let me = agent.downgrade();
        agent
            .update(move |state| state.me = Some(me))
            .await
            .unwrap();
        let weak = agent.downgrade();
        assert!(weak.cast(|_| {}), "alive while a strong handle is");
        drop(agent);
        for _ in 0..100 {
            if was_dropped.try_recv().is_ok() {
                assert!(weak.upgrade().is_none());
                assert!(!weak.cast(|_| {}));
                return;
            }
            actix::clock::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the agent outlived its last strong handle");
    }

    #[actix::test]
    async fn an_agent_on_another_arbiter() {
        let arbiter = actix::Arbiter::new();
        let agent = Agent::start_in(&arbiter.handle(), || String::from("a"));
        agent.update(|s| s.push('b')).await.unwrap();
        assert_eq!(agent.get(|s| s.clone()).await, Ok("ab".to_owned()));
        arbiter.stop();
    }
}
