/*
 * A Modbus device for the tests that shares no code with smartpole: libmodbus answers.
 *
 * Our own simulators frame with our own codec, so a misreading of the protocol would be
 * made twice and never seen. This server is libmodbus (the library many real meters and
 * gateways embed), with the quirks field devices have switched on per test:
 *
 *   --tcp PORT             Modbus TCP on 127.0.0.1:PORT (0: any free port)
 *   --rtu-fd FD            Modbus RTU on an open file descriptor (a pty master the test
 *                          made; the client opens the slave's path)
 *   --rtu-path PATH        Modbus RTU on a serial device libmodbus opens itself
 *   --baud N --parity N|E|O --stopbits 1|2   line settings for RTU (default 9600 N 1)
 *   --unit ID              the unit id (RTU: frames for other units are ignored the way
 *                          libmodbus does it: the next frame is taken for that unit's
 *                          answer and dropped too)
 *   --input ADDR=W,W,...   input registers at ADDR (repeatable; words in decimal)
 *   --holding ADDR=W,W,... holding registers at ADDR (repeatable)
 *   --max-count N          refuse reads of more than N registers with exception 3
 *   --silent-above N       never answer a read of more than N registers (logged "silent"),
 *                          as devices do whose buffer is shorter than the read
 *   --delay-ms N           wait N ms before every answer (a slow turnaround)
 *   --reply-unit ID        answer with this unit id instead of the one asked (a quirk)
 *   --exception N          answer every request with exception N (1 illegal function,
 *                          4 server device failure, 6 busy: a device that only refuses)
 *   --drop-every N         ignore every Nth request addressed to it (logged "dropped"): a
 *                          device that answers only some requests
 *   --log PATH             one line per request received: "unit fc addr count result"
 *   --debug                libmodbus' own trace on stdout/stderr
 *
 * A register no --input/--holding names is a hole: a read or write touching it gets
 * exception 2 (illegal data address). Prints "ready tcp PORT" or "ready rtu" on stdout
 * once it listens, so a test waits for that line instead of sleeping.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <modbus.h>

#define REGISTERS 65536
#define MAX_ADU 260

enum { HOLDING = 0, INPUT = 1 };

static unsigned char mapped[2][REGISTERS];
static modbus_mapping_t *mapping;
static FILE *request_log;
static long refuse_with;  /* --exception: 0 answers normally */
static long drop_every;   /* --drop-every: 0 answers every request */
static long received;     /* requests addressed to it so far */
static long silent_above; /* 0: answer reads of any length */

static void die(const char *what) {
    fprintf(stderr, "libmodbus_device: %s\n", what);
    exit(2);
}

static long number(const char *text, long low, long high, const char *what) {
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 0);
    if (errno != 0 || end == text || *end != '\0' || value < low || value > high) {
        fprintf(stderr, "libmodbus_device: bad %s: %s\n", what, text);
        exit(2);
    }
    return value;
}

/* "ADDR=W,W,..." into the register table of one kind, marking those registers mapped. */
static void add_registers(int kind, char *spec) {
    char *equals = strchr(spec, '=');
    if (equals == NULL) {
        die("registers must be ADDR=W,W,...");
    }
    *equals = '\0';
    long address = number(spec, 0, REGISTERS - 1, "register address");
    uint16_t *table = kind == HOLDING ? mapping->tab_registers : mapping->tab_input_registers;
    char *saved = NULL;
    for (char *word = strtok_r(equals + 1, ",", &saved); word != NULL;
         word = strtok_r(NULL, ",", &saved)) {
        if (address >= REGISTERS) {
            die("registers run past 65535");
        }
        table[address] = (uint16_t)number(word, 0, 65535, "register value");
        mapped[kind][address] = 1;
        address++;
    }
}

static int all_mapped(int kind, int address, int count) {
    if (count < 1 || address + count > REGISTERS) {
        return 0;
    }
    for (int i = address; i < address + count; i++) {
        if (!mapped[kind][i]) {
            return 0;
        }
    }
    return 1;
}

static void note(int unit, int function, int address, int count, const char *result) {
    if (request_log != NULL) {
        fprintf(request_log, "%d %d %d %d %s\n", unit, function, address, count, result);
        fflush(request_log);
    }
}

static void pause_ms(long ms) {
    struct timespec wait = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&wait, &wait) == -1 && errno == EINTR) {
    }
}

/* Answer one request: exception 3 past the count limit, exception 2 on a hole, else
 * libmodbus' own reply from the table. */
static void answer(modbus_t *ctx, uint8_t *query, int length, int max_count, long delay_ms,
                   int reply_unit) {
    int header = modbus_get_header_length(ctx);
    int unit = query[header - 1];
    int function = query[header];
    int address = (query[header + 1] << 8) | query[header + 2];
    int count = (query[header + 3] << 8) | query[header + 4];
    int exception = 0;
    received++;
    if (drop_every > 0 && received % drop_every == 0) {
        note(unit, function, address, count, "dropped");
        return;
    }
    switch (function) {
    case MODBUS_FC_READ_HOLDING_REGISTERS:
    case MODBUS_FC_READ_INPUT_REGISTERS:
        if (silent_above > 0 && count > silent_above) {
            note(unit, function, address, count, "silent");
            return; /* no answer at all: the master times out */
        }
        if (max_count > 0 && count > max_count) {
            exception = MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE;
        } else if (!all_mapped(function == MODBUS_FC_READ_INPUT_REGISTERS ? INPUT : HOLDING,
                               address, count)) {
            exception = MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS;
        }
        break;
    case MODBUS_FC_WRITE_SINGLE_REGISTER:
        count = 1;
        if (!all_mapped(HOLDING, address, 1)) {
            exception = MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS;
        }
        break;
    case MODBUS_FC_WRITE_MULTIPLE_REGISTERS:
        if (!all_mapped(HOLDING, address, count)) {
            exception = MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS;
        }
        break;
    default:
        break; /* libmodbus answers the rest (coils: exception 2, as none are mapped) */
    }
    if (refuse_with > 0) {
        exception = (int)refuse_with;
    }
    char result[16];
    snprintf(result, sizeof result, exception ? "exception-%d" : "ok", exception);
    note(unit, function, address, count, result);
    if (delay_ms > 0) {
        pause_ms(delay_ms);
    }
    if (reply_unit >= 0) {
        query[header - 1] = (uint8_t)reply_unit; /* libmodbus answers with the asked unit */
    }
    if (exception) {
        modbus_reply_exception(ctx, query, (unsigned int)exception);
    } else {
        modbus_reply(ctx, query, length, mapping);
    }
}

static void serve(modbus_t *ctx, int rtu, int max_count, long delay_ms, int reply_unit) {
    uint8_t query[MAX_ADU];
    for (;;) {
        int length = modbus_receive(ctx, query);
        if (length == 0) {
            continue; /* RTU: a frame for another unit, or the frame taken for its answer */
        }
        if (length < 0) {
            /* TCP: the client went away (or sent nonsense: libmodbus drops it). RTU: a bad
             * frame (CRC, length) is skipped as a device on a noisy line does; only a
             * line that is gone ends the loop. */
            if (rtu && errno != EIO && errno != EBADF) {
                continue;
            }
            return;
        }
        answer(ctx, query, length, max_count, delay_ms, reply_unit);
    }
}

int main(int argc, char **argv) {
    long tcp_port = -1;
    long rtu_fd = -1;
    const char *rtu_path = NULL;
    long baud = 9600;
    char parity = 'N';
    long stopbits = 1;
    long unit = 1;
    long max_count = 0;
    long delay_ms = 0;
    long reply_unit = -1;
    int debug = 0;

    mapping = modbus_mapping_new(0, 0, REGISTERS, REGISTERS);
    if (mapping == NULL) {
        die("out of memory");
    }
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (strcmp(flag, "--debug") == 0) {
            debug = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "libmodbus_device: %s needs a value\n", flag);
            return 2;
        }
        char *value = argv[++i];
        if (strcmp(flag, "--tcp") == 0) {
            tcp_port = number(value, 0, 65535, "TCP port");
        } else if (strcmp(flag, "--rtu-fd") == 0) {
            rtu_fd = number(value, 0, 1 << 20, "file descriptor");
        } else if (strcmp(flag, "--rtu-path") == 0) {
            rtu_path = value;
        } else if (strcmp(flag, "--baud") == 0) {
            baud = number(value, 300, 4000000, "baud rate");
        } else if (strcmp(flag, "--parity") == 0) {
            if (strlen(value) != 1 || strchr("NEO", value[0]) == NULL) {
                die("parity must be N, E or O");
            }
            parity = value[0];
        } else if (strcmp(flag, "--stopbits") == 0) {
            stopbits = number(value, 1, 2, "stop bits");
        } else if (strcmp(flag, "--unit") == 0) {
            unit = number(value, 1, 255, "unit id");
        } else if (strcmp(flag, "--input") == 0) {
            add_registers(INPUT, value);
        } else if (strcmp(flag, "--holding") == 0) {
            add_registers(HOLDING, value);
        } else if (strcmp(flag, "--max-count") == 0) {
            max_count = number(value, 1, 125, "register count limit");
        } else if (strcmp(flag, "--silent-above") == 0) {
            silent_above = number(value, 1, 125, "silent-above register count");
        } else if (strcmp(flag, "--delay-ms") == 0) {
            delay_ms = number(value, 0, 60000, "delay");
        } else if (strcmp(flag, "--reply-unit") == 0) {
            reply_unit = number(value, 0, 255, "reply unit id");
        } else if (strcmp(flag, "--exception") == 0) {
            refuse_with = number(value, 1, 255, "exception code");
        } else if (strcmp(flag, "--drop-every") == 0) {
            drop_every = number(value, 1, 1000000, "drop interval");
        } else if (strcmp(flag, "--log") == 0) {
            request_log = fopen(value, "a");
            if (request_log == NULL) {
                die("cannot open the request log");
            }
        } else {
            fprintf(stderr, "libmodbus_device: unknown option %s\n", flag);
            return 2;
        }
    }
    if ((tcp_port >= 0) + (rtu_fd >= 0) + (rtu_path != NULL) != 1) {
        die("give exactly one of --tcp, --rtu-fd, --rtu-path");
    }
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-answer is an error return, not death */

    if (tcp_port >= 0) {
        modbus_t *ctx = modbus_new_tcp("127.0.0.1", (int)tcp_port);
        if (ctx == NULL) {
            die("modbus_new_tcp failed");
        }
        modbus_set_debug(ctx, debug);
        int server = modbus_tcp_listen(ctx, 1);
        if (server < 0) {
            fprintf(stderr, "libmodbus_device: listen: %s\n", modbus_strerror(errno));
            return 1;
        }
        struct sockaddr_in bound;
        socklen_t size = sizeof bound;
        if (getsockname(server, (struct sockaddr *)&bound, &size) != 0) {
            die("getsockname failed");
        }
        printf("ready tcp %d\n", ntohs(bound.sin_port));
        fflush(stdout);
        /* One client at a time, as many small devices serve; a new one after it leaves. */
        for (;;) {
            if (modbus_tcp_accept(ctx, &server) < 0) {
                continue;
            }
            serve(ctx, 0, (int)max_count, delay_ms, (int)reply_unit);
            modbus_close(ctx);
        }
    }

    modbus_t *ctx = modbus_new_rtu(rtu_path != NULL ? rtu_path : "/dev/null", (int)baud, parity,
                                   8, (int)stopbits);
    if (ctx == NULL) {
        die("modbus_new_rtu failed");
    }
    modbus_set_debug(ctx, debug);
    if (modbus_set_slave(ctx, (int)unit) != 0) {
        die("bad unit id");
    }
    if (rtu_path != NULL) {
        if (modbus_connect(ctx) != 0) {
            fprintf(stderr, "libmodbus_device: %s: %s\n", rtu_path, modbus_strerror(errno));
            return 1;
        }
    } else {
        modbus_set_socket(ctx, (int)rtu_fd); /* the pty master the test opened */
    }
    printf("ready rtu\n");
    fflush(stdout);
    serve(ctx, 1, (int)max_count, delay_ms, (int)reply_unit);
    fprintf(stderr, "libmodbus_device: the line is gone: %s\n", modbus_strerror(errno));
    return 1;
}
