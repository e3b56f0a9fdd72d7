/* Where the tests find Fashion-MNIST. */
#ifndef PS_TEST_DATA_DIR_H
#define PS_TEST_DATA_DIR_H

/* PSERV_DATA (the twin of `pserv train --data`, set by tests/gpu/run.sh for an unpacked copy),
 * else Debian's install path. */
const char *data_dir(void);

#endif
