#include "format/table.h"
