/* The entries of one folder as a scan of a file:// tier needs them, read in one call.
 *
 * read_folder(fd, prefix) -> (files, folders, links)
 *
 *   files    [(prefix + name, size, etag, modified µs, arrived µs)] for each regular
 *            file, in the order the folder lists them; etag as obstore gives a local file:
 *            "<inode>-<mtime µs>-<size>" in hexadecimal
 *   folders  [name] of each folder
 *   links    how many symbolic links the folder holds
 *
 * Anything else (sockets, fifos, devices, a file deleted since the folder was read) is
 * left out. Names are decoded as os.listdir() decodes them (the filesystem encoding with
 * surrogateescape). The folder is read and every file is stat-ed without the GIL; Python
 * objects are built afterwards. stores/local.py has the same function in Python
 * (_read_folder_py), used when this module is not built; tests compare the two.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum kind { KIND_FILE, KIND_FOLDER };

struct item {
    char *name;
    enum kind kind;
    long long size;
    unsigned long long ino;
    long long modified; /* µs since the epoch, floored */
    long long changed;
};

struct listing {
    struct item *items;
    size_t count, capacity;
    long links;
    int error; /* errno of a failure, 0 if none */
};

static long long micros(const struct timespec *ts) {
    /* tv_nsec is in [0, 1e9): the sum is floor(ns / 1000), as Python's // gives */
    return (long long)ts->tv_sec * 1000000LL + ts->tv_nsec / 1000;
}

static int push(struct listing *out, const char *name, enum kind kind, const struct stat *st) {
    if (out->count == out->capacity) {
        size_t capacity = out->capacity ? out->capacity * 2 : 256;
        struct item *grown = realloc(out->items, capacity * sizeof *grown);
        if (grown == NULL) return ENOMEM;
        out->items = grown;
        out->capacity = capacity;
    }
    struct item *item = &out->items[out->count];
    item->name = strdup(name);
    if (item->name == NULL) return ENOMEM;
    item->kind = kind;
    if (st != NULL) {
        item->size = (long long)st->st_size;
        item->ino = (unsigned long long)st->st_ino;
        item->modified = micros(&st->st_mtim);
        item->changed = micros(&st->st_ctim);
    }
    out->count++;
    return 0;
}

/* Everything here runs without the GIL. */
static void read_all(int fd, struct listing *out) {
    int own = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (own < 0) {
        out->error = errno;
        return;
    }
    DIR *dir = fdopendir(own);
    if (dir == NULL) {
        out->error = errno;
        close(own);
        return;
    }
    for (;;) {
        errno = 0;
        struct dirent *entry = readdir(dir);
        if (entry == NULL) {
            out->error = errno;
            break;
        }
        const char *name = entry->d_name;
        if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0')))
            continue;
        unsigned char type = entry->d_type;
        if (type == DT_LNK) {
            out->links++;
            continue;
        }
        if (type == DT_DIR) {
            if ((out->error = push(out, name, KIND_FOLDER, NULL)) != 0) break;
            continue;
        }
        if (type != DT_REG && type != DT_UNKNOWN) continue;
        struct stat st;
        if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT) continue; /* deleted since the folder was read */
            out->error = errno;
            break;
        }
        if (S_ISREG(st.st_mode)) {
            if ((out->error = push(out, name, KIND_FILE, &st)) != 0) break;
        } else if (S_ISDIR(st.st_mode)) {
            if ((out->error = push(out, name, KIND_FOLDER, NULL)) != 0) break;
        } else if (S_ISLNK(st.st_mode)) {
            out->links++;
        }
    }
    closedir(dir);
}

static int hex(char *at, long long value) {
    if (value < 0) return sprintf(at, "-%llx", (unsigned long long)(-value));
    return sprintf(at, "%llx", (unsigned long long)value);
}

static PyObject *build(const struct listing *in, PyObject *prefix) {
    PyObject *files = PyList_New(0), *folders = PyList_New(0);
    if (files == NULL || folders == NULL) goto fail;
    for (size_t i = 0; i < in->count; i++) {
        const struct item *item = &in->items[i];
        PyObject *name = PyUnicode_DecodeFSDefault(item->name);
        if (name == NULL) goto fail;
        if (item->kind == KIND_FOLDER) {
            int failed = PyList_Append(folders, name);
            Py_DECREF(name);
            if (failed) goto fail;
            continue;
        }
        PyObject *key = PyUnicode_Concat(prefix, name);
        Py_DECREF(name);
        if (key == NULL) goto fail;
        char etag[80];
        int n = sprintf(etag, "%llx-", item->ino);
        n += hex(etag + n, item->modified);
        etag[n++] = '-';
        hex(etag + n, item->size);
        long long arrived = item->changed > item->modified ? item->changed : item->modified;
        PyObject *entry = Py_BuildValue(
            "(NLsLL)", key, item->size, etag, item->modified, arrived
        );
        if (entry == NULL) goto fail;
        int failed = PyList_Append(files, entry);
        Py_DECREF(entry);
        if (failed) goto fail;
    }
    return Py_BuildValue("(NNl)", files, folders, in->links);
fail:
    Py_XDECREF(files);
    Py_XDECREF(folders);
    return NULL;
}

static PyObject *read_folder(PyObject *self, PyObject *args) {
    (void)self;
    int fd;
    PyObject *prefix;
    if (!PyArg_ParseTuple(args, "iU", &fd, &prefix)) return NULL;
    struct listing listing = {0};
    Py_BEGIN_ALLOW_THREADS
    read_all(fd, &listing);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (listing.error != 0) {
        errno = listing.error;
        PyErr_SetFromErrno(PyExc_OSError);
    } else {
        result = build(&listing, prefix);
    }
    for (size_t i = 0; i < listing.count; i++) free(listing.items[i].name);
    free(listing.items);
    return result;
}

static PyMethodDef methods[] = {
    {"read_folder", read_folder, METH_VARARGS,
     "read_folder(fd, prefix) -> (files, folders, links): one folder's regular files as "
     "(prefix + name, size, etag, modified µs, arrived µs), its folders' names, its "
     "links."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "shelflife.stores._folder",
    "One folder of a file:// tier read in one call (see stores/local.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__folder(void) { return PyModule_Create(&module); }
