/*
 * talloc and tevent expose part of their API only as macros (they add __location__ and
 * type names). These one-line functions give the Rust side those calls by name.
 */
#include <talloc.h>
#include <tevent.h>

struct tevent_req *aio_fork_req_create(TALLOC_CTX *mem_ctx, void **pstate, size_t size)
{
	return _tevent_req_create(mem_ctx, pstate, size, "struct aio_fork_req_state", __location__);
}

void *aio_fork_req_data(struct tevent_req *req)
{
	return _tevent_req_data(req);
}

void *aio_fork_req_callback_data(struct tevent_req *req)
{
	return _tevent_req_callback_data(req);
}

void aio_fork_req_done(struct tevent_req *req)
{
	tevent_req_done(req);
}

bool aio_fork_req_error(struct tevent_req *req, int err)
{
	return tevent_req_error(req, err);
}

struct tevent_fd *aio_fork_add_fd(struct tevent_context *ev, TALLOC_CTX *mem_ctx, int fd,
				  uint16_t flags, tevent_fd_handler_t handler, void *private_data)
{
	return tevent_add_fd(ev, mem_ctx, fd, flags, handler, private_data);
}

struct tevent_timer *aio_fork_add_timer(struct tevent_context *ev, TALLOC_CTX *mem_ctx,
					uint64_t after_usec, tevent_timer_handler_t handler,
					void *private_data)
{
	struct timeval when = tevent_timeval_current_ofs(after_usec / 1000000,
							 after_usec % 1000000);
	return tevent_add_timer(ev, mem_ctx, when, handler, private_data);
}

void aio_fork_set_destructor(void *ptr, int (*destructor)(void *))
{
	_talloc_set_destructor(ptr, destructor);
}

void *aio_fork_talloc_new(const void *parent)
{
	return talloc_named_const(parent, 0, "aio_fork pool");
}

int aio_fork_talloc_free(void *ptr)
{
	return talloc_free(ptr);
}
