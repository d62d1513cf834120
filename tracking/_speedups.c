/* The training process's hot paths in C, each the twin of a Python function that stays the
 * reference (and takes over where this module was not built).
 *
 * Caller's thread (inside Tracker.log_metric / log_metrics, under the GIL): `scalar_event` and
 * `scalars_event`, the event tuple for a plain call, or None for anything else. They take only
 * calls whose checks are type tests: a plain ASCII key (or a key set `events._KNOWN_KEYS` holds),
 * no step or an int step in [0, MAX_STEP], float values, or a torch tensor on the CPU whose item()
 * is a float or an int (read now, as the Python path reads it). For every other call they return
 * None with nothing done, and the Python path in `tracking.recorder.capture` (`metric_event`,
 * `metrics_event`) checks, coerces and raises as it always has: there is one place that words
 * the errors.
 *
 * Writer thread (once per drained batch): `note_steps`, `StepResolver.resolve_all` for a batch
 * of SCALARS events that all have their step (`tracking.steps`), and `all_finite`, which spares
 * the journal writer its search for the `null` orjson writes for NaN and inf
 * (`tracking.journal.writer`).
 *
 * Why C: a tiny training step (~0.13 ms) logging 10 scalars paid ~2 us a step on the caller's
 * thread for the Python checks (1.2 in C), against ~0.35 us for a bare deque.append of the same
 * values, and the writer thread ~1.1 us a step, under the GIL the loop needs too; see
 * benchmarks/tiny_loop.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <time.h>

#define MAX_STEP 9223372036854775807LL

static PyObject *scalars_kind; /* events.SCALARS, set by configure() */
static PyObject *known_keys;   /* events._KNOWN_KEYS: key tuples that passed check_key */
static PyObject *tensor_type;  /* torch.Tensor once torch is imported */
/* The key tuples of the latest plain calls, reused while a loop logs the same keys (the same str
 * objects) call after call: one tuple less to build and hash per call, and one tuple shared by
 * every event of a key set in the queue and the journal's batches. */
static PyObject *last_key;     /* (key,) of the latest log_metric */
static PyObject *last_keys;    /* the keys of the latest log_metrics */
static PyObject *str_is_cpu, *str_item;

static PyObject *new_known_keys(PyObject *metrics, Py_ssize_t n);

static int plain_key(PyObject *key) {
    return PyUnicode_CheckExact(key) && PyUnicode_GET_LENGTH(key) > 0 && PyUnicode_IS_ASCII(key);
}

/* 1 if `step` is None or an int in [0, MAX_STEP]; 0 if the Python path must look at it */
static int plain_step(PyObject *step) {
    if (step == Py_None)
        return 1;
    if (!PyLong_CheckExact(step))
        return 0;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(step, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return v >= 0 && v <= MAX_STEP;
}

static PyObject *now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* what time.time() reads */
    return PyFloat_FromDouble((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
}

/* NULL, with no error set: the Python path takes the call. An error that is not about the value
 * (KeyboardInterrupt, MemoryError) is left set, and the call raises it. */
static PyObject *python_path(void) {
    if (PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_Exception) && !PyErr_ExceptionMatches(PyExc_MemoryError))
        PyErr_Clear();
    return NULL;
}

static PyObject *torch_tensor(void) {
    if (tensor_type == NULL) {
        PyObject *torch = PyDict_GetItemString(PyImport_GetModuleDict(), "torch"); /* borrowed */
        if (torch == NULL || torch == Py_None) /* not imported (yet), or blocked */
            return NULL;
        tensor_type = PyObject_GetAttrString(torch, "Tensor");
        if (tensor_type == NULL)
            PyErr_Clear();
    }
    return tensor_type;
}

/* A new reference to the float to log for `value`; NULL for the Python path (with an error set
 * only for one the call must raise: see python_path). */
static PyObject *plain_value(PyObject *value) {
    if (PyFloat_CheckExact(value)) {
        Py_INCREF(value);
        return value;
    }
    PyObject *tensor = torch_tensor();
    if (tensor == NULL || (PyObject *)Py_TYPE(value) != tensor)
        return NULL;
    PyObject *is_cpu = PyObject_GetAttr(value, str_is_cpu);
    if (is_cpu != Py_True) { /* on an accelerator (snapshotted in Python, never read here), or an error */
        Py_XDECREF(is_cpu);
        return python_path();
    }
    Py_DECREF(is_cpu);
    /* What the Python path does too for a tensor on the CPU: read it now. */
    PyObject *number = PyObject_CallMethodNoArgs(value, str_item);
    if (number == NULL) /* more than one element, a meta tensor: the Python path says why */
        return python_path();
    if (PyFloat_CheckExact(number))
        return number;
    if (PyLong_CheckExact(number)) { /* an integer tensor (a count): float(), as the Python path does */
        double d = PyLong_AsDouble(number);
        Py_DECREF(number);
        if (d == -1.0 && PyErr_Occurred()) /* too large for a float: the Python path refuses it */
            return python_path();
        return PyFloat_FromDouble(d);
    }
    Py_DECREF(number); /* a bool or complex tensor: the Python path refuses it */
    return NULL;
}

static PyObject *event(PyObject *keys, PyObject *values, PyObject *step) {
    PyObject *ts = now();
    if (ts == NULL) {
        Py_DECREF(keys);
        Py_DECREF(values);
        return NULL;
    }
    PyObject *ev = PyTuple_New(5);
    if (ev == NULL) {
        Py_DECREF(keys);
        Py_DECREF(values);
        Py_DECREF(ts);
        return NULL;
    }
    Py_INCREF(scalars_kind);
    Py_INCREF(step);
    PyTuple_SET_ITEM(ev, 0, scalars_kind);
    PyTuple_SET_ITEM(ev, 1, keys);
    PyTuple_SET_ITEM(ev, 2, values);
    PyTuple_SET_ITEM(ev, 3, step);
    PyTuple_SET_ITEM(ev, 4, ts);
    /* Only str, float, int and None inside: no cycle can run through these tuples. CPython's
     * collector would untrack them at its first pass; doing it now spares that pass, which
     * otherwise walks every event waiting in the queue. */
    PyObject_GC_UnTrack(keys); /* (a no-op for a reused key tuple, untracked already) */
    PyObject_GC_UnTrack(values);
    PyObject_GC_UnTrack(ev);
    return ev;
}

/* scalar_event(key, value, step): (SCALARS, (key,), (float,), step, time.time()) or None */
static PyObject *scalar_event(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "scalar_event(key, value, step)");
        return NULL;
    }
    if (scalars_kind == NULL || !plain_key(args[0]) || !plain_step(args[2]))
        Py_RETURN_NONE;
    PyObject *value = plain_value(args[1]);
    if (value == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *keys;
    if (last_key != NULL && PyTuple_GET_ITEM(last_key, 0) == args[0]) {
        keys = last_key;
        Py_INCREF(keys);
    } else {
        keys = PyTuple_Pack(1, args[0]);
        if (keys != NULL) {
            Py_INCREF(keys);
            Py_XSETREF(last_key, keys);
        }
    }
    PyObject *values = keys == NULL ? NULL : PyTuple_Pack(1, value);
    Py_DECREF(value);
    if (values == NULL) {
        Py_XDECREF(keys);
        return NULL;
    }
    return event(keys, values, args[2]);
}

/* scalars_event(metrics, step): (SCALARS, keys, floats, step, time.time()) for a dict of floats
 * under a known key set, or None */
static PyObject *scalars_event(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "scalars_event(metrics, step)");
        return NULL;
    }
    PyObject *metrics = args[0];
    if (scalars_kind == NULL || !PyDict_CheckExact(metrics) || !plain_step(args[1]))
        Py_RETURN_NONE;
    Py_ssize_t n = PyDict_GET_SIZE(metrics);
    if (n == 0)
        Py_RETURN_NONE;
    PyObject *values = PyTuple_New(n);
    if (values == NULL)
        return NULL;
    PyObject *cached = last_keys; /* borrowed; compared by identity, key by key */
    int same = cached != NULL && PyTuple_GET_SIZE(cached) == n;
    PyObject *key, *value;
    Py_ssize_t pos = 0, i = 0;
    while (PyDict_Next(metrics, &pos, &key, &value)) {
        if (!PyFloat_CheckExact(value) || i >= n) { /* i >= n: cannot happen for a dict */
            Py_DECREF(values);
            Py_RETURN_NONE;
        }
        same = same && PyTuple_GET_ITEM(cached, i) == key;
        Py_INCREF(value);
        PyTuple_SET_ITEM(values, i, value);
        i++;
    }
    if (i != n) {
        Py_DECREF(values);
        Py_RETURN_NONE;
    }
    PyObject *keys = same ? cached : new_known_keys(metrics, n);
    if (keys == NULL) {
        Py_DECREF(values);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    if (same)
        Py_INCREF(keys);
    return event(keys, values, args[1]);
}

/* A new reference to the tuple of `metrics`' keys if `known_keys` holds it (then remembered as
 * `last_keys`); NULL without an error for a key set the Python path must check first. */
static PyObject *new_known_keys(PyObject *metrics, Py_ssize_t n) {
    PyObject *keys = PyTuple_New(n);
    if (keys == NULL)
        return NULL;
    PyObject *key, *value;
    Py_ssize_t pos = 0, i = 0;
    while (i < n && PyDict_Next(metrics, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) { /* a str subclass may equal a known key: Python checks it */
            Py_DECREF(keys);
            return NULL;
        }
        Py_INCREF(key);
        PyTuple_SET_ITEM(keys, i, key);
        i++;
    }
    int known = i == n ? PySet_Contains(known_keys, keys) : 0; /* hashes the keys */
    if (known != 1) {
        PyErr_Clear(); /* an unhashable key: the Python path says what is wrong */
        Py_DECREF(keys);
        return NULL;
    }
    Py_INCREF(keys);
    Py_XSETREF(last_keys, keys);
    return keys;
}

/* note_steps(events, seen, max_seen): for a list of SCALARS events that all have an int step,
 * raise seen[keys] to the highest step of each key set and return True. False for any other
 * batch, or one that would grow `seen` past max_seen: StepResolver.resolve_all then goes over it
 * in Python, which finds the maxima noted so far already in place (raising a maximum twice is
 * raising it once). */
static PyObject *note_steps(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_CheckExact(args[0]) || !PyDict_CheckExact(args[1]) || !PyLong_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "note_steps(events: list, seen: dict, max_seen: int)");
        return NULL;
    }
    PyObject *events = args[0], *seen = args[1];
    Py_ssize_t max_seen = PyLong_AsSsize_t(args[2]);
    if (max_seen == -1 && PyErr_Occurred())
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(events); i++) {
        PyObject *ev = PyList_GET_ITEM(events, i);
        if (scalars_kind == NULL || !PyTuple_CheckExact(ev) || PyTuple_GET_SIZE(ev) != 5 ||
            PyTuple_GET_ITEM(ev, 0) != scalars_kind || !PyLong_CheckExact(PyTuple_GET_ITEM(ev, 3)))
            Py_RETURN_FALSE;
        PyObject *keys = PyTuple_GET_ITEM(ev, 1), *step = PyTuple_GET_ITEM(ev, 3);
        PyObject *highest = PyDict_GetItemWithError(seen, keys); /* borrowed */
        int raise;
        if (highest == NULL) {
            if (PyErr_Occurred())
                return NULL;
            if (PyDict_GET_SIZE(seen) >= max_seen)
                Py_RETURN_FALSE; /* the Python path folds the key sets first */
            raise = 1;
        } else {
            raise = PyObject_RichCompareBool(highest, step, Py_LT);
            if (raise < 0)
                return NULL;
        }
        if (raise && PyDict_SetItem(seen, keys, step) < 0)
            return NULL;
    }
    Py_RETURN_TRUE;
}

/* all_finite(events): True if every event is a SCALARS event whose values are finite floats;
 * False if one is not (or holds another kind: the caller then looks the slow way). */
static PyObject *all_finite(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "all_finite(events: list)");
        return NULL;
    }
    PyObject *events = args[0];
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(events); i++) {
        PyObject *ev = PyList_GET_ITEM(events, i);
        if (scalars_kind == NULL || !PyTuple_CheckExact(ev) || PyTuple_GET_SIZE(ev) != 5 ||
            PyTuple_GET_ITEM(ev, 0) != scalars_kind || !PyTuple_CheckExact(PyTuple_GET_ITEM(ev, 2)))
            Py_RETURN_FALSE;
        PyObject *values = PyTuple_GET_ITEM(ev, 2);
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(values); j++) {
            PyObject *v = PyTuple_GET_ITEM(values, j);
            if (!PyFloat_CheckExact(v) || !isfinite(PyFloat_AS_DOUBLE(v)))
                Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

/* configure(SCALARS, known_keys): called once by tracking.recorder.capture at import */
static PyObject *configure(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyUnicode_CheckExact(args[0]) || !PySet_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "configure(SCALARS: str, known_keys: set)");
        return NULL;
    }
    Py_INCREF(args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(scalars_kind, args[0]);
    Py_XSETREF(known_keys, args[1]);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scalar_event", (PyCFunction)(void (*)(void))scalar_event, METH_FASTCALL,
     "scalar_event(key, value, step): the SCALARS event of a plain log_metric call, or None"},
    {"scalars_event", (PyCFunction)(void (*)(void))scalars_event, METH_FASTCALL,
     "scalars_event(metrics, step): the SCALARS event of a plain log_metrics call, or None"},
    {"note_steps", (PyCFunction)(void (*)(void))note_steps, METH_FASTCALL,
     "note_steps(events, seen, max_seen): the highest step of each key set of a batch of SCALARS events"},
    {"all_finite", (PyCFunction)(void (*)(void))all_finite, METH_FASTCALL,
     "all_finite(events): True if every event is SCALARS with finite float values"},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(SCALARS, known_keys): the event kind and the set of checked key tuples"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "tracking._speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    str_is_cpu = PyUnicode_InternFromString("is_cpu");
    str_item = PyUnicode_InternFromString("item");
    if (str_is_cpu == NULL || str_item == NULL)
        return NULL;
    return PyModule_Create(&module);
}
