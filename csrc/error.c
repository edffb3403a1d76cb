/* error.c - names for the GRAY_E* codes. */
#include "gray.h"

const char *gray_strerror(int code)
{
    switch (code) {
    case GRAY_OK:       return "ok";
    case GRAY_EINVAL:   return "malformed input";
    case GRAY_EAGAIN:   return "incomplete input";
    case GRAY_EADDR:    return "not an IP address";
    case GRAY_EPREFIX:  return "bad prefix length";
    case GRAY_ESPACE:   return "output buffer too small";
    case GRAY_EDIGITS:  return "bad number";
    case GRAY_ERANGE:   return "number out of range";
    case GRAY_ELINE:    return "line not terminated by CRLF";
    case GRAY_EDATA:    return "data block not followed by CRLF";
    case GRAY_EKEY:     return "bad key";
    case GRAY_EUNASKED: return "value for a key that was not requested";
    case GRAY_EREPLY:   return "unknown reply";
    case GRAY_EMAC:     return "bad signature";
    case GRAY_EEXPIRED: return "expired";
    case GRAY_ENOMEM:   return "out of memory";
    case GRAY_EIO:      return "file error";
    case GRAY_EIMAGE:   return "not a list image of this format";
    case GRAY_ECORRUPT: return "truncated or corrupt list image";
    case GRAY_ECANCELED: return "compile canceled";
    case GRAY_ELOCKED:  return "lock held by another process";
    case GRAY_ESTEP:    return "bad ramp step";
    case GRAY_EORDER:   return "ramp steps out of order";
    default:            return "unknown error";
    }
}

const char *gray_version(void)
{
    return GRAY_VERSION;
}
