#include "telemetry/http_head.h"

#include <gtest/gtest.h>

#include <string>

namespace aimesh {
namespace {

TEST(HttpHeadEnd, CrlfOrBareLfAndIncrementalSearch) {
  EXPECT_EQ(httpHeadEnd("GET / HTTP/1.1\r\n\r\nrest"), 18u);
  EXPECT_EQ(httpHeadEnd("GET / HTTP/1.1\n\n"), 16u);
  EXPECT_EQ(httpHeadEnd("GET / HTTP/1.1\r\nHost: x\r\n"), std::string::npos);
  // Searched up to the first CR already: the end straddles it.
  std::string buf = "GET / HTTP/1.1\r\n\r\n";
  EXPECT_EQ(httpHeadEnd(buf, 15), 18u);
}

TEST(HttpHeadParse, AScrapeWithItsHeaders) {
  HttpRequestHead r;
  ASSERT_EQ(parseHttpHead("GET /metrics?x=1 HTTP/1.1\r\nAccept: text/plain\r\naccept: */*\r\nConnection: "
                          "Keep-Alive\r\n\r\n",
                          8, r),
            0);
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.path, "/metrics");
  EXPECT_EQ(r.version, "HTTP/1.1");
  EXPECT_EQ(r.accept, "text/plain,*/*");
  EXPECT_EQ(r.connection, "keep-alive");
  EXPECT_FALSE(r.hasBody);
}

TEST(HttpHeadParse, StatusesForWhatItDoesNotServe) {
  HttpRequestHead r;
  EXPECT_EQ(parseHttpHead("", 8, r), 400);
  EXPECT_EQ(parseHttpHead("GET /metrics\r\n\r\n", 8, r), 400);             // no version
  EXPECT_EQ(parseHttpHead("get /metrics HTTP/1.1\r\n\r\n", 8, r), 400);    // method in lower case
  EXPECT_EQ(parseHttpHead("GET metrics HTTP/1.1\r\n\r\n", 8, r), 400);     // not origin-form
  EXPECT_EQ(parseHttpHead("GET /metrics HTTP/2.0\r\n\r\n", 8, r), 505);
  EXPECT_EQ(parseHttpHead("GET / HTTP/1.1\r\n folded\r\n\r\n", 8, r), 400);
  EXPECT_EQ(parseHttpHead("GET / HTTP/1.1\r\nNo colon\r\n\r\n", 8, r), 400);
  EXPECT_EQ(parseHttpHead("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 2, r), 431);
  HttpRequestHead body;
  ASSERT_EQ(parseHttpHead("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 8, body), 0);
  EXPECT_TRUE(body.hasBody);
}

}  // namespace
}  // namespace aimesh
