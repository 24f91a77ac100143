"""Many objects in one storlet call: the sandbox's mapping
(:mod:`mlstorlets.sandbox.many`), the client's plan of calls
(:mod:`mlstorlets.client.many_calls`), and the batch that uses both,
against a stand-in gateway."""

import io
import json
import tarfile

import pytest

from mlstorlets.client import batch, many_calls
from mlstorlets.client.runners import budget
from mlstorlets.client.swift import Declaration, Limits, Swift, SwiftError
from mlstorlets.sandbox import invocation, many, protocol
from mlstorlets.sandbox.errors import ObjectError, ParameterError


class Input(io.BytesIO):
    def __init__(self, data, metadata=None):
        super().__init__(data)
        self.metadata = metadata or {}
        self.closes = 0

    def get_metadata(self):
        return dict(self.metadata)

    def close(self):
        self.closes += 1
        super().close()


def upper(in_files, params):
    """A one-object storlet: the input upper-cased; a shared input, if any,
    appended; ``bad`` refused."""
    data = in_files[0].read()
    if data == b"bad":
        raise ObjectError(params["source"], "not a good object")
    if params.get("level") == "x":
        raise ParameterError(params["source"], "level", "level must be a number")
    extra = b"".join(f.read() for f in in_files[1:])
    return {"Seen-As": params["source"]}, data.upper() + extra


def plan_of(*entries):
    return {protocol.MANY_PARAMETER: json.dumps([list(e) for e in entries])}


def members(body):
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return [(m.name, tar.extractfile(m).read(), dict(m.pax_headers)) for m in tar]


def test_each_input_becomes_its_own_member_with_metadata_and_etag():
    inputs = [Input(b"one", {"Frame-Index": "1", "Filter": "old"}), Input(b"two")]
    params = dict(
        plan_of(("c/1.jpg", "1.jpg", "e1"), ("c/2.jpg", "sub/2.jpg", "e2")),
        **{protocol.MANY_TYPE_PARAMETER: "image/jpeg"},
    )
    metadata, body = many.compute_many(inputs, params, upper)
    assert metadata == {}
    found = members(body)
    assert [(n, d) for n, d, _ in found[:2]] == [("1.jpg", b"ONE"), ("sub/2.jpg", b"TWO")]
    pax = found[0][2]
    # The source's metadata is kept under the storlet's, as by a copy.
    assert pax[protocol.PAX_META + "Frame-Index"] == "1"
    assert pax[protocol.PAX_META + "Filter"] == "old"
    assert pax[protocol.PAX_META + "Seen-As"] == "c/1.jpg"
    assert pax[protocol.PAX_META + protocol.SOURCE_ETAG_KEY] == "e1"
    assert pax[protocol.PAX_TYPE] == "image/jpeg"
    assert found[-1][0] == protocol.MANY_REPORT
    assert json.loads(found[-1][1]) == {"refused": []}
    assert all(f.closes for f in inputs)


def test_a_refused_object_is_reported_and_the_others_made():
    inputs = [Input(b"one"), Input(b"bad"), Input(b"three")]
    params = plan_of(("c/1", "1", "e"), ("c/2", "2", "e"), ("c/3", "3", "e"))
    _, body = many.compute_many(inputs, params, upper)
    found = members(body)
    assert [n for n, _, _ in found] == ["1", "3", protocol.MANY_REPORT]
    assert json.loads(found[-1][1]) == {"refused": [["c/2", "not a good object"]]}


def test_a_refused_parameter_refuses_the_whole_call():
    inputs = [Input(b"one"), Input(b"two")]
    params = dict(plan_of(("c/1", "1", "e"), ("c/2", "2", "e")), level="x")
    with pytest.raises(ParameterError) as caught:
        many.compute_many(inputs, params, upper)
    assert caught.value.parameter == "level"


def test_shared_inputs_are_read_once_and_given_to_every_object():
    model = Input(b"+model", {"Kind": "model"})
    inputs = [Input(b"one"), Input(b"two"), model]
    _, body = many.compute_many(inputs, plan_of(("c/1", "1", "e"), ("c/2", "2", "e")), upper)
    assert [d for _, d, _ in members(body)[:2]] == [b"ONE+model", b"TWO+model"]
    assert model.closes


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        "[]",
        json.dumps([["c/1", "1"]]),
        json.dumps([["c/1", "1", ""]]),
        json.dumps([["c/1", "1", "e"]] * 3),
        json.dumps({"c/1": "1"}),
    ],
)
def test_a_malformed_plan_is_refused(value):
    with pytest.raises(ObjectError, match=protocol.MANY_PARAMETER):
        many.parse_plan({protocol.MANY_PARAMETER: value}, 2)


@pytest.mark.parametrize("name", ["../x", "/abs", "a//b", "a/./b", ".mlstorlets-report.json", ""])
def test_an_output_name_that_is_not_plain_is_refused(name):
    with pytest.raises(ObjectError):
        many.parse_plan({protocol.MANY_PARAMETER: json.dumps([["c/1", name or "x/", "e"]])}, 1)


class Out:
    def __init__(self):
        self.metadata, self.data = None, b""

    def set_metadata(self, metadata):
        self.metadata = metadata

    def write(self, data):
        self.data += data

    def close(self):
        pass


class Logger:
    def info(self, msg):
        pass


def test_invocation_maps_many_only_for_a_storlet_that_declares_it():
    params = plan_of(("c/1", "1", "e"))
    out = Out()
    invocation.run(Logger(), [Input(b"one")], [out], params, upper, maps_many=True)
    assert out.metadata[protocol.LENGTH_KEY] == str(len(out.data))
    assert members(out.data)[0][1] == b"ONE"
    out = Out()
    invocation.run(Logger(), [Input(b"one")], [out], params, upper)
    assert "one output over all its inputs" in out.metadata[protocol.ERROR_KEY]
    assert out.data == b""


def test_every_mlstorlets_storlet_of_one_object_declares_many():
    import os

    from mlstorlets.client.deploy import declared_many, default_source_dir

    found = {}
    for name in sorted(os.listdir(default_source_dir())):
        if name.endswith(".py"):
            with open(os.path.join(default_source_dir(), name)) as f:
                found[name] = declared_many(f.read(), name)
    assert {n for n, ok in found.items() if ok} == {
        "apply_model.py",
        "estimator.py",
        "extract_face.py",
        "frame_filter.py",
        "recognize_face.py",
    }


# -- the client's plan -------------------------------------------------------
def task(i, size=1000, dest="out/f%04d.jpg", container="src", content_type="image/jpeg"):
    return batch.Task(
        container, "frames/f%04d.jpg" % i, "%032x" % i, size, "dst", dest % i, content_type
    )


def plan(tasks, **kw):
    options = dict(datagram=4096, header=8192, metadata_cost=100)
    options.update(kw)
    return many_calls.plan(tasks, {"filter": "colormap"}, **options)


def test_calls_fit_the_datagram_and_cover_every_task_in_order():
    tasks = [task(i) for i in range(100)]
    calls = plan(tasks)
    assert [t for call in calls for t in call] == tasks
    assert len(calls) > 3 and all(len(c) > 1 for c in calls)
    for call in calls:
        used = (
            budget.ENGINE_RESERVE
            + len(call) * 100
            + budget.datagram_cost(many_calls.call_parameters({"filter": "colormap"}, call, None))
        )
        assert used <= 4096
    # A larger datagram carries more, up to the sandbox's descriptors.
    big = plan(tasks, datagram=1 << 20)
    assert [len(c) for c in big] == [many_calls.MAX_OBJECTS, 100 - many_calls.MAX_OBJECTS]
    # Spread over calls enough for the batch's workers.
    assert [len(c) for c in plan(tasks, datagram=1 << 20, spread=8)] == [13] * 7 + [9]


def test_large_objects_go_alone_and_groups_keep_one_directory_and_type():
    tasks = [
        task(0),
        task(1),
        task(2, size=many_calls.MAX_OBJECT_BYTES + 1),
        task(3),
        task(4, dest="other/f%04d.jpg"),
        task(5, dest="other/f%04d.jpg", content_type="image/png"),
    ]
    calls = plan(tasks, content_type_of=lambda t: t.content_type)
    assert [[t.name[-9:-4] for t in c] for c in calls] == [
        ["f0000", "f0001"],
        ["f0002"],
        ["f0003"],
        ["f0004"],
        ["f0005"],
    ]


def test_an_output_name_a_call_would_refuse_goes_alone():
    tasks = [task(0), task(1, dest="out//f%04d.jpg"), task(2), task(3)]
    assert [len(c) for c in plan(tasks)] == [1, 1, 2]


def test_shared_inputs_count_against_each_call():
    tasks = [task(i) for i in range(40)]
    alone = plan(tasks, datagram=1 << 20)
    shared = plan(tasks, datagram=1 << 20, shared=["/m/model.onnx"] * 30)
    assert len(alone[0]) == 40
    assert len(shared[0]) == many_calls.MAX_OBJECTS - 30


def test_the_header_line_bounds_a_call():
    tasks = [task(i, dest="out/%04d" + "x" * 200) for i in range(60)]
    tasks = [
        batch.Task("src", "frames/" + "n" * 300 + "%d" % i, "e", 10, "dst", "o/%d" % i)
        for i in range(60)
    ]
    calls = plan(tasks, datagram=1 << 20)
    for call in calls:
        line = ",".join(budget.resource_path(t.container, t.name) for t in call[1:])
        assert len("X-Storlet-Extra-Resources: ") + len(line) + 2 <= 8192


# -- the batch, against a stand-in gateway ------------------------------------
class Gateway(Swift):
    """Lists ``sources``, runs the many-object calls in process with
    :func:`upper`, and single copies likewise; records every call."""

    def __init__(self, sources, datagram=1 << 20, fail_calls_over=None):
        self.sources = sources
        self.objects = {}
        self.calls = []
        self.datagram = datagram
        self.fail_calls_over = fail_calls_over

    def check_storlet(self, storlet, params):
        return Declaration(None, None, True)

    def limits(self):
        return Limits(datagram=self.datagram)

    def listing(self, container, prefix=None):
        if container == "dst":
            return [{"name": n, "hash": "x"} for n in self.objects]
        return [
            {"name": n, "hash": "e-" + n, "bytes": len(d), "content_type": "text/plain"}
            for n, d in self.sources.items()
        ]

    def head(self, container, name=None):
        if name is None:
            return {}
        if container == "dst":
            found = self.objects.get(name)
            return None if found is None else found[1]
        return {"etag": "e-" + name, "content-length": "3"}

    def ensure_container(self, container):
        pass

    def parallel(self, fn, items, concurrency):
        return [fn(i) for i in items]

    def storlet_extract(self, container, name, dest_container, prefix, storlet, params, **kw):
        extra = kw.get("extra_resources") or []
        self.calls.append(1 + len(extra))
        if self.fail_calls_over and 1 + len(extra) > self.fail_calls_over:
            raise SwiftError(name, "the storlet died", 502, protocol.FAILED)
        inputs = [Input(self.sources[name])] + [
            Input(self.sources[p.split("/", 2)[2]]) for p in extra
        ]
        _, body = many.compute_many(inputs, params, upper)
        refused = []
        for member, data, pax in members(body):
            if member == protocol.MANY_REPORT:
                refused = json.loads(data)["refused"]
                continue
            meta = {
                k.replace(protocol.PAX_META, "x-object-meta-").lower(): v for k, v in pax.items()
            }
            meta.update({k.lower(): v for k, v in kw["headers"].items()})
            self.objects[(prefix + "/" if prefix else "") + member] = (data, meta)
        return {"Response Status": "201 Created", "Errors": [], "Refused": refused}

    def storlet_copy(self, container, name, dest_container, dest_name, storlet, params, *a, **kw):
        self.calls.append(1)
        if self.sources[name] == b"bad":
            raise SwiftError(name, "refused", 422, protocol.REFUSED)
        meta = {k.lower(): v for k, v in kw["headers"].items()}
        self.objects[dest_name] = (self.sources[name].upper(), meta)


def test_a_batch_maps_small_objects_many_per_call_and_resumes():
    sources = {"f%02d.txt" % i: b"x%d" % i for i in range(10)}
    sources["f05.txt"] = b"bad"
    gateway = Gateway(sources)
    summary = batch.run_batch(gateway, "upper.py", "swift://src/", "swift://dst/", concurrency=1)
    # Twice the concurrency in calls, for the cluster's workers.
    assert gateway.calls == [5, 5]
    assert len(summary.done) == 9
    assert summary.failed == [
        ("swift://src/f05.txt", "storlet upper.py refused it: not a good object")
    ]
    assert gateway.objects["f03.txt"][0] == b"X3"
    assert gateway.objects["f03.txt"][1]["x-object-meta-source-etag"] == "e-f03.txt"
    # Run again: the nine are up to date, the bad one is tried alone.
    gateway.calls.clear()
    again = batch.run_batch(gateway, "upper.py", "swift://src/", "swift://dst/")
    assert len(again.skipped) == 9 and len(again.failed) == 1
    assert gateway.calls == [1]


def test_a_call_that_fails_whole_is_split_down_to_single_objects():
    sources = {"f%02d.txt" % i: b"x%d" % i for i in range(8)}
    gateway = Gateway(sources, fail_calls_over=3)
    summary = batch.run_batch(
        gateway, "upper.py", "swift://src/", "swift://dst/", concurrency=1, objects_per_call=8
    )
    assert len(summary.done) == 8 and not summary.failed
    # Two calls of 4 fail, each split in calls of 2 that succeed.
    assert gateway.calls == [4, 2, 2, 4, 2, 2]


def test_one_object_per_call_when_asked():
    sources = {"f%02d.txt" % i: b"x%d" % i for i in range(4)}
    gateway = Gateway(sources)
    batch.run_batch(gateway, "upper.py", "swift://src/", "swift://dst/", objects_per_call=1)
    assert gateway.calls == [1, 1, 1, 1]


class FlakyGateway(Gateway):
    """Bulk answers 503 for some members of the first calls, as while a
    storage node restarts; those members are not written."""

    def __init__(self, sources, flaky, complete=True):
        super().__init__(sources)
        self.flaky = set(flaky)
        self.complete = complete

    def storlet_extract(self, container, name, dest_container, prefix, storlet, params, **kw):
        answer = super().storlet_extract(
            container, name, dest_container, prefix, storlet, params, **kw
        )
        errors = []
        for dest in sorted(self.flaky & set(self.objects)):
            del self.objects[dest]
            errors.append(["dst/" + dest, "503 Service Unavailable"])
        self.flaky.clear()
        if errors:
            answer.update(
                {"Response Status": "502 Bad Gateway", "Errors": errors, "Complete": self.complete}
            )
        return answer


def test_outputs_swift_could_not_write_for_now_are_tried_again(monkeypatch):
    monkeypatch.setattr(many_calls, "RETRY_PAUSE", 0.01)
    sources = {"f%02d.txt" % i: b"x%d" % i for i in range(8)}
    gateway = FlakyGateway(sources, ["f01.txt", "f02.txt"])
    summary = batch.run_batch(
        gateway, "upper.py", "swift://src/", "swift://dst/", concurrency=1, objects_per_call=8
    )
    assert len(summary.done) == 8 and not summary.failed
    # The two others of that call are taken as done: only the two are
    # tried again, then the second call.
    assert gateway.calls == [4, 1, 1, 4]
    assert sorted(gateway.objects) == sorted(sources)


def test_an_extraction_cut_short_leaves_the_rest_unknown_and_retried(monkeypatch):
    monkeypatch.setattr(many_calls, "RETRY_PAUSE", 0.01)
    sources = {"f%02d.txt" % i: b"x%d" % i for i in range(4)}
    gateway = FlakyGateway(sources, ["f01.txt"], complete=False)
    summary = batch.run_batch(
        gateway, "upper.py", "swift://src/", "swift://dst/", concurrency=1, objects_per_call=4
    )
    assert len(summary.done) == 4 and not summary.failed
    # Without the whole report nothing of that call is known: both again.
    assert gateway.calls == [2, 1, 1, 2]
