//! Buffers kept for reuse, and a low-water mark of how many went untaken: what was not taken
//! between two trims was not needed, and a trim frees it. The proxy's forwarding buffers and
//! the large payload texts ([`crate::wire::json::pool`]) are kept so: taken warm instead of
//! faulted in fresh, and let go once a burst is over.

/// The buffers kept, and the fewest kept since the last [`Spare::trim`].
pub(crate) struct Spare<T> {
    kept: Vec<T>,
    low: usize,
}

impl<T> Spare<T> {
    pub(crate) const fn new() -> Spare<T> {
        Spare {
            kept: Vec::new(),
            low: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.kept.len()
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.kept.iter()
    }

    /// Keep `item` (the caller bounds how many).
    pub(crate) fn put(&mut self, item: T) {
        self.kept.push(item);
    }

    /// The buffer kept last.
    pub(crate) fn take(&mut self) -> Option<T> {
        let item = self.kept.pop();
        self.low = self.low.min(self.kept.len());
        item
    }

    /// The buffers not taken since the last trim (none at the first), for the caller to
    /// free outside its lock.
    pub(crate) fn trim(&mut self) -> Vec<T> {
        let spare = self.low.min(self.kept.len());
        let freed = self.kept.split_off(self.kept.len() - spare);
        self.low = self.kept.len();
        freed
    }
}

impl<T> Default for Spare<T> {
    fn default() -> Self {
        Spare::new()
    }
}
