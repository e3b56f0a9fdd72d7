#include "data_dir.h"

#include <stdlib.h>

#include "pserv/pserv_model.h"

const char *data_dir(void)
{
    const char *dir = getenv("PSERV_DATA");
    return dir && *dir ? dir : PSERV_FASHION_MNIST_DIR;
}
