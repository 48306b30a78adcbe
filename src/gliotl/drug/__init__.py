"""Drug-response pipeline: N-step transfer learning from expression."""
