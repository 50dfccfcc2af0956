/*
 * host.c - embed CPython, load a pyimgano-deploy bundle ONCE, score raw BGR frames.
 *
 *   host [--threads N] BUNDLE_DIR HEIGHT WIDTH [FRAME.bgr ...]
 *
 * Each frame is HEIGHT*WIDTH*3 bytes, BGR, uint8, row-major (what OpenCV / most cameras
 * deliver). Without frame files, three synthetic frames are generated. The frame buffer is
 * handed to Python WITHOUT a copy: a read-only memoryview over the C memory, wrapped by
 * np.frombuffer inside pyimgano_deploy.runtimes.embed. For every frame it prints
 *
 *   frame N: score=S label=L        (L is 0, 1, or "none" when the bundle has no threshold)
 *
 * Exit codes: 0 ok, 2 usage / frame file error, 3 Python failed to start or import the
 * helper, 4 bundle could not be loaded, 5 a frame could not be scored, 6 Py_FinalizeEx failed.
 * Python errors are printed (with traceback) on stderr.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Interpreter whose prefix / virtualenv / site-packages to use (set by the Makefile from
 * sys.executable). The environment variable PYHOST_PYTHON overrides it at run time;
 * PYTHONHOME and PYTHONPATH are honoured as usual. */
#ifndef PYHOST_PYTHON
#define PYHOST_PYTHON ""
#endif

enum {
    RC_OK = 0,
    RC_USAGE = 2,
    RC_PYTHON = 3,
    RC_BUNDLE = 4,
    RC_FRAME = 5,
    RC_FINALIZE = 6,
};

#define N_SYNTHETIC 3

/* ------------------------------------------------------------------ frames (plain C) */

/* Deterministic test pattern whose contrast grows with the frame index n:
 * v = clip(128 + (x*7 + y*13 + c*5 + n*31) % (2*s + 1) - s, 0, 255), s = 20 + 50*n. */
static void make_synthetic_frame(unsigned char *bgr, int height, int width, int n)
{
    const int spread = 20 + 50 * n;
    size_t k = 0;
    for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
            for (int c = 0; c < 3; c++) {
                int v = 128 + (x * 7 + y * 13 + c * 5 + n * 31) % (2 * spread + 1) - spread;
                bgr[k++] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
}

/* Read exactly `size` bytes from `path` into `bgr`; the file must have exactly that size. */
static int read_frame(const char *path, unsigned char *bgr, size_t size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return RC_USAGE;
    }
    size_t got = fread(bgr, 1, size, f);
    int extra = fgetc(f);
    fclose(f);
    if (got != size || extra != EOF) {
        fprintf(stderr, "host: %s: expected exactly %zu bytes (HEIGHT*WIDTH*3), got %s%zu\n",
                path, size, extra != EOF ? "more than " : "", got);
        return RC_USAGE;
    }
    return RC_OK;
}

/* ------------------------------------------------------------------ Python side */

/* Print the pending Python exception and clear it. PyErr_PrintEx(0) is PyErr_Print() without
 * storing the exception in sys.last_traceback, whose frames would keep the array that points
 * at the host's frame buffer alive. */
static void report_python_error(const char *what)
{
    fprintf(stderr, "host: %s failed:\n", what);
    PyErr_PrintEx(0);
}

static int start_python(void)
{
    PyConfig config;
    PyConfig_InitPythonConfig(&config); /* reads PYTHONHOME, PYTHONPATH, ... */
    config.parse_argv = 0;              /* the host's argv is not Python's */
    config.install_signal_handlers = 0; /* the host owns SIGINT & co. */

    PyStatus status = PyStatus_Ok();
    const char *python = getenv("PYHOST_PYTHON");
    if (python == NULL || python[0] == '\0')
        python = PYHOST_PYTHON;
    if (python[0] != '\0') /* compute sys.prefix (and find a venv's pyvenv.cfg) from it */
        status = PyConfig_SetBytesString(&config, &config.program_name, python);
    if (!PyStatus_Exception(status))
        status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        fprintf(stderr, "host: cannot initialise Python: %s%s%s\n", status.func ? status.func : "",
                status.func ? ": " : "", status.err_msg ? status.err_msg : "(no message)");
        return RC_PYTHON;
    }
    return RC_OK;
}

/* embed.open_scorer(bundle_dir, batch_size=1[, threads=N]) -> new reference or NULL. */
static PyObject *open_scorer(PyObject *embed, const char *bundle_dir, long threads)
{
    PyObject *func = NULL, *args = NULL, *kwargs = NULL, *scorer = NULL;
    if ((func = PyObject_GetAttrString(embed, "open_scorer")) == NULL)
        goto done;
    if ((args = Py_BuildValue("(N)", PyUnicode_DecodeFSDefault(bundle_dir))) == NULL)
        goto done;
    kwargs = threads > 0 ? Py_BuildValue("{s:i,s:l}", "batch_size", 1, "threads", threads)
                         : Py_BuildValue("{s:i}", "batch_size", 1);
    if (kwargs != NULL)
        scorer = PyObject_Call(func, args, kwargs);
done:
    Py_XDECREF(func);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    return scorer;
}

/* Score one frame and print it. The caller holds the GIL; `bgr` stays valid and unchanged
 * until this returns. */
static int score_frame(PyObject *scorer, const unsigned char *bgr, int height, int width, int index)
{
    Py_ssize_t size = (Py_ssize_t)height * width * 3;
    /* Read-only view of the host's memory: no copy is made. */
    PyObject *view = PyMemoryView_FromMemory((char *)bgr, size, PyBUF_READ);
    if (view == NULL) {
        report_python_error("wrapping the frame");
        return RC_FRAME;
    }
    PyObject *result = PyObject_CallMethod(scorer, "score_bgr", "Oii", view, height, width);
    int rc = RC_OK;
    double score = 0.0;
    PyObject *label = NULL; /* borrowed from result */
    if (result == NULL || !PyArg_ParseTuple(result, "dO", &score, &label)) {
        char what[64];
        snprintf(what, sizeof what, "scoring frame %d", index);
        report_python_error(what);
        rc = RC_FRAME;
    } else if (label == Py_None) {
        printf("frame %d: score=%.9g label=none\n", index, score);
    } else {
        printf("frame %d: score=%.9g label=%ld\n", index, score, PyLong_AsLong(label));
    }
    fflush(stdout);
    Py_XDECREF(result);
    /* Release the view now: any later use from Python raises instead of reading this memory. */
    PyObject *released = PyObject_CallMethod(view, "release", NULL);
    if (released == NULL) {
        report_python_error("releasing the frame view");
        rc = RC_FRAME;
    }
    Py_XDECREF(released);
    Py_DECREF(view);
    return rc;
}

/* ------------------------------------------------------------------ main */

static int usage(const char *prog)
{
    fprintf(stderr, "usage: %s [--threads N] BUNDLE_DIR HEIGHT WIDTH [FRAME.bgr ...]\n", prog);
    return RC_USAGE;
}

int main(int argc, char **argv)
{
    long threads = 0;
    int i = 1;
    if (i + 1 < argc && strcmp(argv[i], "--threads") == 0) {
        threads = strtol(argv[i + 1], NULL, 10);
        if (threads < 1)
            return usage(argv[0]);
        i += 2;
    }
    if (argc - i < 3)
        return usage(argv[0]);
    const char *bundle_dir = argv[i];
    long height = strtol(argv[i + 1], NULL, 10), width = strtol(argv[i + 2], NULL, 10);
    char **files = argv + i + 3;
    int n_files = argc - i - 3;
    if (height < 1 || width < 1 || height > 65535 || width > 65535) {
        fprintf(stderr, "host: HEIGHT and WIDTH must be in 1..65535\n");
        return usage(argv[0]);
    }
    size_t size = (size_t)height * (size_t)width * 3;
    unsigned char *frame = malloc(size); /* one buffer, reused for every frame */
    if (frame == NULL) {
        fprintf(stderr, "host: cannot allocate %zu bytes\n", size);
        return RC_USAGE;
    }

    int rc = start_python();
    if (rc != RC_OK) {
        free(frame);
        return rc;
    }
    PyObject *embed = PyImport_ImportModule("pyimgano_deploy.runtimes.embed");
    PyObject *scorer = NULL;
    if (embed == NULL) {
        report_python_error("importing pyimgano_deploy.runtimes.embed");
        rc = RC_PYTHON;
    } else if ((scorer = open_scorer(embed, bundle_dir, threads)) == NULL) {
        report_python_error("loading the bundle");
        rc = RC_BUNDLE;
    }

    if (scorer != NULL) {
        /* Release the GIL while the host does its own work; other host threads may call
         * into Python meanwhile (with PyGILState_Ensure / PyGILState_Release). */
        PyThreadState *main_state = PyEval_SaveThread();
        int n_frames = n_files > 0 ? n_files : N_SYNTHETIC;
        for (int n = 0; n < n_frames && rc == RC_OK; n++) {
            if (n_files > 0)
                rc = read_frame(files[n], frame, size);
            else
                make_synthetic_frame(frame, (int)height, (int)width, n);
            if (rc != RC_OK)
                break;
            PyEval_RestoreThread(main_state); /* take the GIL for the call ... */
            rc = score_frame(scorer, frame, (int)height, (int)width, n);
            main_state = PyEval_SaveThread(); /* ... and give it back */
        }
        PyEval_RestoreThread(main_state);
    }

    Py_XDECREF(scorer);
    Py_XDECREF(embed);
    if (Py_FinalizeEx() < 0 && rc == RC_OK)
        rc = RC_FINALIZE;
    free(frame);
    return rc;
}
