//! Catching the application's panics, so that a panic in one channel or store ends only
//! that channel or that call.
//!
//! Owns turning a panic, in a closure or a future, into its message. Must not decide
//! what a panic means: the channel and the agent do.

use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Runs `f`, turning a panic into its message.
pub(crate) fn catch_panic<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(&*payload))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_owned()
    }
}

/// A future whose panics come out as `Err(message)`.
pub(crate) struct CatchUnwind<F>(pub Pin<Box<F>>)
where
    F: Future + ?Sized;

impl<F: Future + ?Sized> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_panic(move || inner.poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(message) => Poll::Ready(Err(message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(catch_panic(|| 1), Ok(1));
        assert_eq!(catch_panic(|| -> u8 { panic!("boom") }), Err("boom".into()));
        let n = 7;
        assert_eq!(
            catch_panic(|| -> u8 { panic!("n = {n}") }),
            Err("n = 7".into())
        );
        assert_eq!(
            catch_panic(|| -> u8 { std::panic::panic_any(3u8) }),
            Err("non-string panic".into())
        );
    }

    #[actix::test]
    async fn a_panicking_future_becomes_its_message() {
        let fine = CatchUnwind(Box::pin(async { 2 }));
        assert_eq!(fine.await, Ok(2));
        let crashing = CatchUnwind(Box::pin(async { panic!("later") }));
        let outcome: Result<(), String> = crashing.await;
        assert_eq!(outcome, Err("later".into()));
    }
}
