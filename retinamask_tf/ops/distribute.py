"""Cross-replica reductions that also work outside ``strategy.run``."""

import tensorflow as tf


def cross_replica_sum(value):
    """Sum of ``value`` over all replicas when called inside ``strategy.run``;
    the value itself with one replica or outside a replica context."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)
