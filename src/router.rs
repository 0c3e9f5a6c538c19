//! The router: which channel serves a topic.
//!
//! Owns the topic patterns (`"all"`, `"room:*"`) and the factory behind each. Must not
//! start or track instances: the session does, through the factory it gets here.

use crate::channel::{Channel, ChannelFactory, FactoryFn};

/// Longest topic served: a longer one could not travel in a V2 binary frame.
const MAX_TOPIC_BYTES: usize = 255;

/// Topic patterns to channels, first match wins.
#[derive(Default)]
pub struct Router {
    routes: Vec<(Pattern, Box<dyn ChannelFactory>)>,
}

enum Pattern {
    Exact(String),
    /// `"room:*"`: any topic starting with `"room:"`.
    Prefix(String),
}

impl Pattern {
    fn parse(pattern: &str) -> Self {
        match pattern.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix.to_owned()),
            None => Pattern::Exact(pattern.to_owned()),
        }
    }

    fn matches(&self, topic: &str) -> bool {
        match self {
            Pattern::Exact(exact) => topic == exact,
            Pattern::Prefix(prefix) => topic.starts_with(prefix.as_str()),
        }
    }
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves topics matching `pattern` (exact, or a prefix ending in `*`) with channels
    /// made by `make`, which is given the topic.
    pub fn channel<C, F>(self, pattern: &str, make: F) -> Self
    where
        C: Channel,
        F: Fn(&str) -> C + Send + Sync + 'static,
    {
        self.factory(pattern, FactoryFn(make))
    }

    /// Serves topics matching `pattern` with instances started by `factory`.
    pub(crate) fn factory(mut self, pattern: &str, factory: impl ChannelFactory + 'static) -> Self {
        self.routes
            .push((Pattern::parse(pattern), Box::new(factory)));
        self
    }

    pub(crate) fn route(&self, topic: &str) -> Option<&dyn ChannelFactory> {
        if topic.len() > MAX_TOPIC_BYTES {
            return None;
        }
        self.routes
            .iter()
            .find(|(pattern, _)| pattern.matches(topic))
            .map(|(_, factory)| factory.as_ref())
    }
}
