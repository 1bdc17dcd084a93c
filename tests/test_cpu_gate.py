"""The CPU gate: decodes share the CPU, a model batch has it alone, and a waiting batch is not
starved by a stream of decodes."""
import threading
import time

from embedsvc.service.cpu_gate import CpuGate


def test_batches_never_overlap_decodes_and_decodes_overlap_each_other():
    gate = CpuGate()
    lock = threading.Lock()
    state = {"decoding": 0, "batch": False, "max_decoding": 0, "violations": 0}

    def decoder():
        for _ in range(30):
            with gate.decoding():
                with lock:
                    state["decoding"] += 1
                    state["max_decoding"] = max(state["max_decoding"], state["decoding"])
                    state["violations"] += state["batch"]
                time.sleep(0.001)
                with lock:
                    state["decoding"] -= 1

    def batcher():
        for _ in range(20):
            with gate.batch():
                with lock:
                    state["batch"] = True
                    state["violations"] += state["decoding"] > 0
                time.sleep(0.002)
                with lock:
                    state["batch"] = False

    threads = [threading.Thread(target=decoder) for _ in range(6)] + [threading.Thread(target=batcher)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert state["violations"] == 0
    assert state["max_decoding"] > 1


def test_a_waiting_batch_goes_before_new_decodes():
    gate = CpuGate()
    order = []
    first_decode_in = threading.Event()
    release_first = threading.Event()

    def long_decode():
        with gate.decoding():
            first_decode_in.set()
            release_first.wait(10)
        order.append("decode-1")

    def batch():
        with gate.batch():
            order.append("batch")

    def late_decode():
        with gate.decoding():
            order.append("decode-2")

    t1 = threading.Thread(target=long_decode)
    t1.start()
    first_decode_in.wait(10)
    tb = threading.Thread(target=batch)
    tb.start()
    time.sleep(0.05)  # the batch is now waiting for the first decode
    t2 = threading.Thread(target=late_decode)
    t2.start()
    time.sleep(0.05)
    assert order == []  # the late decode waits behind the batch
    release_first.set()
    for t in (t1, tb, t2):
        t.join(10)
    assert order.index("batch") < order.index("decode-2")


def test_disabled_gate_lets_everything_through():
    gate = CpuGate(enabled=False)
    with gate.batch(), gate.decoding():
        pass
