//! A value kept per thread between calls of a shared operation: a mapper lane's operations
//! are `Fn + Sync` closures shared by every lane, and a table a combiner fills and empties for
//! every batch is cheaper kept by each lane's thread than allocated and grown per batch.

use std::any::Any;
use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// This thread's kept value if it is a `V`, or a new one.
pub(crate) fn take<V: Default + 'static>() -> V {
    SCRATCH
        .with(|s| s.borrow_mut().take())
        .and_then(|kept| kept.downcast::<V>().ok())
        .map_or_else(V::default, |v| *v)
}

/// Keeps `value` for this thread's next [`take`].
pub(crate) fn put<V: 'static>(value: V) {
    SCRATCH.with(|s| *s.borrow_mut() = Some(Box::new(value)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_value_comes_back_only_as_its_own_type_and_only_on_its_thread() {
        let mut v: Vec<u32> = take();
        v.reserve(100);
        put(v);
        assert!(take::<Vec<u32>>().capacity() >= 100);
        assert_eq!(take::<Vec<u32>>().capacity(), 0, "taken once");
        put(vec![1u8]);
        assert_eq!(
            take::<Vec<u32>>(),
            Vec::<u32>::new(),
            "another type: a new value"
        );
        put(vec![1u32]);
        std::thread::spawn(|| assert!(take::<Vec<u32>>().is_empty()))
            .join()
            .unwrap();
        assert_eq!(take::<Vec<u32>>(), vec![1]);
    }
}
